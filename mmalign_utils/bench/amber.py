"""AMBER (LLM-free hallucination benchmark): generative CHAIR/Cover/Hal/Cog and discriminative yes/no.

Follows AMBER's inference.py (commit 534babf) rule by rule:
- Generative (ids 1-1004, "Describe this image."): nouns = NN* tokens of `nltk.word_tokenize` + `nltk.pos_tag`,
  WordNet-lemmatised; only words of the relation.json vocabulary (keys and values) are kept. A kept word in
  safe_words.txt is skipped but still counted in CHAIR's denominator (as upstream). Otherwise, in order:
  an exact match with a truth object or one of its associations covers that object (not a hallucination);
  an exact match with a hallu object or association is a "cog" hit; then (only with a similarity function) the
  first hallu word with similarity > 0.8 is a cog hit and the first truth word with similarity > 0.8 covers its
  object; a word left uncovered is a hallucinated mention.
  CHAIR = hallucinated / kept mentions, Cover = covered truth objects / truth objects, Hal = 100 - % responses
  without hallucination, Cog = hit hallu objects / hallu objects; every denominator starts at 0.001
  (data/metrics.txt), results x100 rounded to 1 decimal.
- Discriminative (ids 1005-15220): positive class "No". Accuracy = correct / all; Precision = correct "No" /
  "No" answers; Recall = truth-no answered "No" / truth-no; each rounded to 1 decimal, then
  F1 = 2PR/(P+R+1e-4) from the rounded values (existence: 1e-3). Only exactly "Yes"/"No" count: `normalize`
  decides what is compared (see `normalize_answer`).

The official NLP pieces (punkt, the perceptron tagger, WordNet) may be missing here: see nlp.py. Without a POS
tagger the fallback treats every token whose lemma is in the relation.json vocabulary as a noun (non-official:
it also counts vocabulary words used as verbs or adjectives). The score dict records which pieces ran.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from mmalign_utils.bench.common import DataFile, check_files
from mmalign_utils.bench.nlp import NLPToolkit, Similarity, get_toolkit, similarity_name
from mmalign_utils.judges.base import Judge

NAME = "amber"
PROTOCOLS = {"official": "AMBER inference.py (CHAIR/Cover/Hal/Cog; acc/P/R/F1 with 'No' positive)"}
DEFAULT_PROTOCOL = "official"
SIMILARITY_THRESHOLD = 0.8
_SOURCE = "github.com/junyangwang0410/AMBER data/ (commit 534babf); images (AMBER_1.jpg ...) from the Google " \
          "Drive link in its README, under <data_dir>/amber/image"
REQUIRED_FILES = [
    DataFile("amber/annotations.json", _SOURCE, "db22a436c4836fbb295e60b4e80d519573077579fb7032f01b193c1bd022b797"),
    DataFile("amber/relation.json", _SOURCE, "c4c1491e9bbc3209abc1888c12a1bf8413bdbab8a0d8be04b990a2e7680cf23e"),
    DataFile("amber/safe_words.txt", _SOURCE, "f92cf1123f4578a2630832fac3e6ac4de36212ea55859d3bed4fd233723f4043"),
    DataFile("amber/query/query_all.json", _SOURCE,
             "127680ae61f7d4a92d2f7f07a8deaec07f0689b194d2c7c0f41ead7bd2c5bcf5"),
]

# annotation `type` -> (dimension, sub-dimension); everything else discriminative is a relation question.
_DIMENSIONS = {
    "generative": ("generative", None),
    "discriminative-hallucination": ("existence", None),
    "discriminative-attribute-state": ("attribute", "state"),
    "discriminative-attribute-number": ("attribute", "number"),
    "discriminative-attribute-action": ("attribute", "action"),
}
NORMALIZE_MODES = ("none", "first_word", "casefold")
DEFAULT_NORMALIZE = "first_word"


# --------------------------------------------------------------------------------------------------- data

def _dimension(kind: str) -> tuple[str, str | None]:
    return _DIMENSIONS.get(kind, ("relation", None))


def load(data_dir: str | Path, verify_hash: bool = True, image_dir: str | Path | None = None) -> list[dict]:
    """Items {id, question, image, image_path, type, dimension, sub_dimension, truth, hallu (generative) |
    label (discriminative)} from query_all.json joined with annotations.json (entry id - 1)."""
    data_dir = Path(data_dir)
    check_files(NAME, data_dir, REQUIRED_FILES, verify_hash=verify_hash)
    annotations = json.loads((data_dir / "amber/annotations.json").read_text(encoding="utf-8"))
    queries = json.loads((data_dir / "amber/query/query_all.json").read_text(encoding="utf-8"))
    return items_from(queries, annotations, Path(image_dir) if image_dir else data_dir / "amber" / "image")


def items_from(queries: list[dict], annotations: list[dict], image_root: Path) -> list[dict]:
    items = []
    for q in queries:
        qid = int(q["id"])
        if not 1 <= qid <= len(annotations):
            raise ValueError(f"AMBER query id {qid} has no annotation (annotations.json has {len(annotations)} "
                             "entries, indexed by id - 1)")
        ann = annotations[qid - 1]
        dimension, sub = _dimension(ann["type"])
        item = {"id": qid, "question": q["query"], "image": q["image"], "image_path": str(image_root / q["image"]),
                "type": ann["type"], "dimension": dimension, "sub_dimension": sub, "category": dimension}
        if dimension == "generative":
            item["truth"], item["hallu"] = list(ann["truth"]), list(ann["hallu"])
        else:
            item["label"] = ann["truth"]
        items.append(item)
    return items


def load_resources(data_dir: str | Path) -> tuple[dict[str, list[str]], list[str]]:
    """(relation.json association table, safe words) from <data_dir>/amber/."""
    data_dir = Path(data_dir)
    relation = json.loads((data_dir / "amber/relation.json").read_text(encoding="utf-8"))
    return relation, read_safe_words(data_dir / "amber/safe_words.txt")


def read_safe_words(path: str | Path) -> list[str]:
    # upstream: line.split('\n')[0] per line, so a final empty line would add "" (harmless)
    return [line.split("\n")[0] for line in Path(path).read_text(encoding="utf-8").splitlines()]


def build_model_prompts(items: list[dict], protocol: str = DEFAULT_PROTOCOL) -> list[dict]:
    """Question records {question_id, image, text} (the query as AMBER gives it)."""
    _check_protocol(protocol)
    return [{"question_id": it["id"], "image": it["image"], "text": it["question"]} for it in items]


def read_answers(path: str | Path) -> dict[str, str]:
    """AMBER's response file, a JSON list of {id, response} -> {id as str: response}.

    A JSONL file of LLaVA answers ({question_id, text}) is accepted too.
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        rows = json.loads(text)
    except json.JSONDecodeError:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    answers: dict[str, str] = {}
    for n, row in enumerate(rows if isinstance(rows, list) else [rows], 1):
        qid = row.get("id", row.get("question_id"))
        response = row.get("response", row.get("text"))
        if qid is None or response is None:
            raise ValueError(f"{path}: record {n} needs 'id' and 'response' (AMBER format); got keys {sorted(row)}")
        if str(qid) in answers:
            raise ValueError(f"{path}: record {n}: id {qid} answered twice")
        answers[str(qid)] = response
    return answers


def write_answers(path: str | Path, answers: dict[str, str]) -> None:
    """Write AMBER's response format: a JSON list of {id, response}."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    rows = [{"id": int(qid), "response": response} for qid, response in answers.items()]
    Path(path).write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")


# --------------------------------------------------------------------------------------------------- generative

def vocabulary(relation: dict[str, list[str]]) -> set[str]:
    """The words AMBER tracks: every relation.json key and associated word."""
    return set(relation) | {w for words in relation.values() for w in words}


def extract_nouns(text: str, toolkit: NLPToolkit, vocab: set[str]) -> list[str]:
    """Lemmas of the nouns in `text`, in order: tagger NN* tokens, or (no tagger) tokens whose lemma is a
    vocabulary word."""
    tokens = toolkit.tokenize(text)
    if toolkit.pos_tag is not None:
        return [toolkit.lemmatize(word) for word, tag in toolkit.pos_tag(tokens) if tag.startswith("NN")]
    lemmas = (toolkit.lemmatize(word) for word in tokens)
    return [lemma for lemma in lemmas if lemma in vocab]


def _expand(objects: list[str], relation: dict[str, list[str]], unknown: set[str]) -> list[tuple[str, int]]:
    """(word, object index) in upstream's search order: all associations first, then the objects themselves."""
    pairs = []
    for idx, obj in enumerate(objects):
        if obj not in relation:
            unknown.add(obj)
        pairs.extend((word, idx) for word in relation.get(obj, []))
    return pairs + [(obj, idx) for idx, obj in enumerate(objects)]


def score_generative_response(text: str, truth: list[str], hallu: list[str], relation: dict[str, list[str]],
                              safe_words: set[str], toolkit: NLPToolkit, vocab: set[str] | None = None,
                              similarity: Similarity | None = None, threshold: float = SIMILARITY_THRESHOLD,
                              unknown_objects: set[str] | None = None) -> dict:
    """One description: its kept mentions, which are hallucinated, and which truth/hallu objects it hits."""
    vocab = vocabulary(relation) if vocab is None else vocab
    unknown = unknown_objects if unknown_objects is not None else set()
    kept = [noun for noun in extract_nouns(text, toolkit, vocab) if noun in vocab]
    truth_words, hallu_words = _expand(truth, relation, unknown), _expand(hallu, relation, unknown)
    covered, cog_hit = [0] * len(truth), [0] * len(hallu)
    hallucinated: list[str] = []
    for noun in kept:
        if noun in safe_words:
            continue
        owner = next((idx for word, idx in truth_words if word == noun), None)
        if owner is not None:
            covered[owner] = 1
            continue
        owner = next((idx for word, idx in hallu_words if word == noun), None)
        if owner is not None:
            cog_hit[owner] = 1
        if similarity is not None:
            owner = next((idx for word, idx in hallu_words if similarity(noun, word) > threshold), None)
            if owner is not None:
                cog_hit[owner] = 1
            owner = next((idx for word, idx in truth_words if similarity(noun, word) > threshold), None)
            if owner is not None:
                covered[owner] = 1
                continue
        hallucinated.append(noun)
    return {"mentions": kept, "hallucinated": hallucinated, "covered": covered, "cog_hit": cog_hit}


def _pct(score: float, num: float) -> float:
    return round(score / num * 100, 1)


def _generative_metrics(rows: list[dict]) -> dict:
    eps = 0.001  # data/metrics.txt starts every *_num counter at 0.001
    mentions = sum(len(r["mentions"]) for r in rows)
    hallucinated = sum(len(r["hallucinated"]) for r in rows)
    covered, truth_n = sum(sum(r["covered"]) for r in rows), sum(len(r["covered"]) for r in rows)
    cog, hallu_n = sum(sum(r["cog_hit"]) for r in rows), sum(len(r["cog_hit"]) for r in rows)
    clean = sum(1 for r in rows if not r["hallucinated"])
    return {
        "CHAIR": _pct(hallucinated, mentions + eps), "Cover": _pct(covered, truth_n + eps),
        "Hal": round(100 - clean / (len(rows) + eps) * 100, 1), "Cog": _pct(cog, hallu_n + eps),
        "n": len(rows), "mentions": mentions, "hallucinated_mentions": hallucinated,
        "covered_objects": covered, "truth_objects": truth_n, "cog_hits": cog, "hallu_objects": hallu_n,
        "responses_with_hallucination": len(rows) - clean,
    }


# --------------------------------------------------------------------------------------------------- discriminative

def normalize_answer(response: str, mode: str = DEFAULT_NORMALIZE) -> str:
    """What is compared with "Yes"/"No" (case-sensitively, as upstream).

    "none": the raw response (official; "No." is neither). "first_word": the leading run of letters, case kept
    ("No, it is not." -> "No", "yes" stays "yes" and counts as neither). "casefold": the first word capitalised
    ("yes" -> "Yes"; non-official, more lenient).
    """
    if mode == "none":
        return response
    match = re.match(r"\s*([A-Za-z]+)", response)
    word = match.group(1) if match else ""
    if mode == "first_word":
        return word
    if mode == "casefold":
        return word.capitalize()
    raise ValueError(f"unknown normalize mode {mode!r}; choose one of {NORMALIZE_MODES}")


def _discriminative_metrics(rows: list[dict], f1_eps: float = 1e-4, counters: int = 1) -> dict:
    """rows: {label, answer}. Upstream counters start at 0.001; the attribute row adds up the state, number and
    action counters, so its denominators carry 3 x 0.001 (`counters=3`)."""
    eps = 0.001 * counters
    # upstream: a label other than "yes" is a "no" question, except in Precision's numerator (truth == 'no')
    correct = sum((r["label"] == "yes" and r["answer"] == "Yes") or (r["label"] != "yes" and r["answer"] == "No")
                  for r in rows)
    truth_no = sum(r["label"] != "yes" for r in rows)
    answered_no = sum(r["answer"] == "No" for r in rows)
    correct_no = sum(r["label"] == "no" and r["answer"] == "No" for r in rows)
    recall_hits = sum(r["label"] != "yes" and r["answer"] == "No" for r in rows)
    acc = _pct(correct, len(rows) + eps)
    precision = _pct(correct_no, answered_no + eps)
    recall = _pct(recall_hits, truth_no + eps)
    f1 = round(2 * (precision / 100) * (recall / 100) / ((precision / 100) + (recall / 100) + f1_eps) * 100, 1)
    return {"acc": acc, "precision": precision, "recall": recall, "f1": f1, "n": len(rows),
            "answered_no": answered_no, "truth_no": truth_no,
            "unparsed": sum(r["answer"] not in ("Yes", "No") for r in rows)}


# --------------------------------------------------------------------------------------------------- scoring

def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"AMBER: unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")


def score(items: list[dict], answers: dict[str, str], *, protocol: str = DEFAULT_PROTOCOL, judge: Judge | None = None,
          relation: dict[str, list[str]] | None = None, safe_words: list[str] | set[str] = (),
          nlp: NLPToolkit | None = None, similarity: Similarity | None = None,
          similarity_threshold: float = SIMILARITY_THRESHOLD, normalize: str = DEFAULT_NORMALIZE,
          allow_missing: bool = False, only_answered: bool = False, **_: object) -> dict:
    """Score AMBER answers {id as str: response}. Generative items need `relation` (relation.json) and
    `safe_words`. `judge` is unused (AMBER is LLM-free). `nlp` defaults to `get_toolkit("auto")`.
    """
    _check_protocol(protocol)
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"unknown normalize mode {normalize!r}; choose one of {NORMALIZE_MODES}")
    answers = {str(k): v for k, v in answers.items()}
    if only_answered:
        items = [it for it in items if str(it["id"]) in answers]
    missing = [it["id"] for it in items if str(it["id"]) not in answers]
    if missing and not allow_missing:
        raise ValueError(f"AMBER: {len(missing)} of {len(items)} queries have no response (first: {missing[:5]}); "
                         "answer them, or pass allow_missing=True or only_answered=True")
    generative = [it for it in items if it["dimension"] == "generative"]
    discriminative = [it for it in items if it["dimension"] != "generative"]
    result: dict = {"benchmark": NAME, "protocol": protocol, "n": len(items), "n_generative": len(generative),
                    "n_discriminative": len(discriminative), "missing": len(missing), "per_item": []}

    if generative:
        if relation is None:
            raise ValueError("AMBER: generative items need relation= (data/relation.json); see load_resources()")
        toolkit = nlp or get_toolkit("auto")
        vocab, safe, unknown = vocabulary(relation), set(safe_words), set()
        rows = []
        for it in generative:
            text = answers.get(str(it["id"]), "")
            row = score_generative_response(text, it["truth"], it["hallu"], relation, safe, toolkit, vocab,
                                            similarity, similarity_threshold, unknown)
            rows.append(row)
            result["per_item"].append({"id": it["id"], "dimension": "generative", "text": text, **row})
        result["generative"] = _generative_metrics(rows)
        result["nlp"] = toolkit.describe(needs_tagger=True)
        result["nlp"]["similarity"] = similarity_name(similarity)
        fidelity = toolkit.fidelity(needs_tagger=True)
        if similarity is None or getattr(similarity, "name", "") != "spacy:en_core_web_lg":
            fidelity = "approximate"  # upstream always runs en_core_web_lg similarity
        result["fidelity"] = fidelity
        if unknown:
            result["objects_missing_from_relation"] = sorted(unknown)  # upstream would raise KeyError

    if discriminative:
        rows = []
        for it in discriminative:
            text = answers.get(str(it["id"]), "")
            answer = normalize_answer(text, normalize)
            rows.append({"label": it["label"], "answer": answer})
            result["per_item"].append({"id": it["id"], "dimension": it["dimension"],
                                       "sub_dimension": it["sub_dimension"], "text": text, "answer": answer,
                                       "label": it["label"]})
        by_dim: dict[str, list[dict]] = defaultdict(list)
        by_sub: dict[str, list[dict]] = defaultdict(list)
        for row, it in zip(rows, discriminative):
            by_dim[it["dimension"]].append(row)
            if it["sub_dimension"]:
                by_sub[it["sub_dimension"]].append(row)
        disc = {"all": _discriminative_metrics(rows)}
        for dim in ("existence", "attribute", "relation"):
            if by_dim.get(dim):
                disc[dim] = _discriminative_metrics(by_dim[dim], f1_eps=1e-3 if dim == "existence" else 1e-4,
                                                    counters=3 if dim == "attribute" else 1)
        for sub in ("state", "number", "action"):
            if by_sub.get(sub):
                disc[sub] = _discriminative_metrics(by_sub[sub])
        result["discriminative"] = disc
        result["normalize"] = normalize
    result["unparsed"] = result.get("discriminative", {}).get("all", {}).get("unparsed", 0)
    # the headline numbers also at the top level, where results tables pick up plain numbers
    for key in ("CHAIR", "Cover", "Hal", "Cog"):
        if "generative" in result:
            result[key] = result["generative"][key]
    for key in ("acc", "precision", "recall", "f1"):
        if "discriminative" in result:
            result[key] = result["discriminative"]["all"][key]
    if "generative" in result and "discriminative" in result:
        # AMBER Score as the paper defines it; the script does not print it (unverified).
        chair, f1 = result["generative"]["CHAIR"], result["discriminative"]["all"]["f1"]
        result["amber_score"] = round((100 - chair + f1) / 2, 2)
    result["headline_metric"] = "CHAIR" if generative else "f1"
    return result


def score_file(answers_path: str | Path, data_dir: str | Path, protocol: str = DEFAULT_PROTOCOL,
               judge: Judge | None = None, **kw) -> dict:
    """Load AMBER from data_dir, read a response file ([{id, response}]) and score every answered query type."""
    verify_hash = kw.pop("verify_hash", True)
    items = load(data_dir, verify_hash=verify_hash)
    relation, safe_words = load_resources(data_dir)
    kw.setdefault("only_answered", True)  # a generative-only or discriminative-only file is normal
    result = score(items, read_answers(answers_path), protocol=protocol, judge=judge, relation=relation,
                   safe_words=safe_words, **kw)
    result["answers_file"] = str(answers_path)
    return result
