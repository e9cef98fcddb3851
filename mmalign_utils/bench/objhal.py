"""Object HalBench: CHAIR on 300 COCO val2014 descriptions, as RLHF-V's eval_gpt_obj_halbench.py computes it.

Ground truth per image: the COCO 2014 (train+val) segmentation classes, plus every COCO object the rule
tokeniser finds in the image's reference captions, all mapped to canonical classes through synonyms_refine.txt.

Object extraction, per protocol:
- "rule" (original CHAIR `caption_to_words`, RLHF-V without --use_gpt): lower-case, tokenise, lemmatise every
  token (WordNet noun), merge double words (multi-word synonyms, "home plate", "train track", baby/adult + animal,
  passenger jet/train, "bow tie" -> tie, "toilet seat" -> toilet, "wine glas" -> wine glass), drop "seat" when
  "toilet" occurs, keep synonym words; every occurrence counts.
- "gpt" (RLHF-V --use_gpt): the judge lists the visible objects (replies of <= 3 words skip the call and give no
  objects); each object "a <obj>" is lemmatised and double-word merged, else split into noun runs; objects are
  de-duplicated per response. Upstream used spaCy en_core_web_trf for lemmas and tags; without a tagger the noun
  runs are runs of COCO synonym words (approximate).

Metrics (fractions): CHAIRs = responses with a hallucinated mention / responses; CHAIRs_refine = the same over
responses with at least one COCO mention ("Response Hall"); CHAIRi = hallucinated mentions / COCO mentions
("Object Hall"); obj_rec = distinct correct classes / GT classes, summed over responses; avg_word_len.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mmalign_utils.bench.common import BenchmarkDataError, DataFile, check_files, read_jsonl, write_jsonl
from mmalign_utils.bench.judged_common import check_text_sha256, string_literal_from_script
from mmalign_utils.bench.nlp import NLPToolkit, get_toolkit
from mmalign_utils.judges.base import Judge, JudgeRequest

NAME = "objhal"
PROTOCOLS = {
    "rule": "original CHAIR caption_to_words object extraction (RLHF-V without --use_gpt)",
    "gpt": "RLHF-V --use_gpt: an LLM lists the objects, then lemma / double-word / noun-run mapping",
}
DEFAULT_PROTOCOL = "rule"
_RLHFV = "github.com/RLHF-V/RLHF-V eval/data/ (commit 8daac8a)"
_COCO = "COCO 2014 annotations_trainval2014.zip (cocodataset.org), unpacked under <data_dir>/coco/annotations"
REQUIRED_FILES = [
    DataFile("objhal/obj_halbench_300_with_image.jsonl", _RLHFV),
    DataFile("objhal/synonyms_refine.txt", _RLHFV, "681041d2958d7871ed6fa69c3108f34aa6a0a354eb53ed4c5a425e65f86bc72a"),
    *(DataFile(f"coco/annotations/{kind}_{split}2014.json", _COCO)
      for kind in ("instances", "captions") for split in ("train", "val")),
]

# RLHF-V's extraction prompt is read from the user's copy of eval/eval_gpt_obj_halbench.py (`prompt_template`);
# benchmarks.md §12 pins it: 912 characters with this SHA-256.
EXTRACTION_PROMPT_FILE = "objhal/eval_gpt_obj_halbench.py"
EXTRACTION_PROMPT_SHA256 = "9d732f9b73a3cc965bee6eb163b8e5248e58bd9d382eb583e9ece59933e2b580"
_SCRIPT_SOURCE = "github.com/RLHF-V/RLHF-V eval/eval_gpt_obj_halbench.py (commit 8daac8a)"


def load_extraction_prompt(script_path: str | Path, verify_hash: bool = True) -> str:
    """The GPT-path prompt (with {question} and {answer}) from RLHF-V's script, read with `ast` and hash-checked."""
    path = Path(script_path)
    if not path.exists():
        raise BenchmarkDataError(f"missing {path}: the gpt protocol reads its prompt from {_SCRIPT_SOURCE}; "
                                 "put a copy there")
    prompt = string_literal_from_script(path, "prompt_template")
    check_text_sha256(f"{path} prompt_template", prompt, EXTRACTION_PROMPT_SHA256, verify_hash, _SCRIPT_SOURCE)
    return prompt


# --------------------------------------------------------------------------------------------------- synonyms

@dataclass
class Synonyms:
    """synonyms_refine.txt: one line per COCO class, "canonical, syn1, syn2, ..."."""

    objects: set[str]  # every canonical name and synonym
    canonical: dict[str, str]  # synonym -> canonical (a later line wins, as upstream's dict update)
    double_words: dict[str, str] = field(default_factory=dict)  # two-word phrase -> merged word

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> Synonyms:
        objects: set[str] = set()
        canonical: dict[str, str] = {}
        for line in lines:
            if not line.strip():
                continue
            names = [s.strip() for s in line.strip().split(", ")]
            objects.update(names)
            for name in names:
                canonical[name] = names[0]
        double = {w: w for w in canonical if len(w.strip().split(" ")) >= 2}
        double.update({"home plate": "home plate", "train track": "train track"})
        for animal in ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
                       "animal", "cub"):
            double[f"baby {animal}"] = animal
            double[f"adult {animal}"] = animal
        for vehicle in ("jet", "train"):
            double[f"passenger {vehicle}"] = vehicle
        double.update({"bow tie": "tie", "toilet seat": "toilet", "wine glas": "wine glass"})
        return cls(objects=objects, canonical=canonical, double_words=double)

    @classmethod
    def from_file(cls, path: str | Path) -> Synonyms:
        return cls.from_lines(Path(path).read_text(encoding="utf-8").splitlines())

    def noun_words(self) -> set[str]:
        """Single words that occur in any synonym (the tagger-free stand-in for noun tokens)."""
        return {part for name in self.objects for part in name.split(" ")}


def _merge_double_words(words: list[str], synonyms: Synonyms, keep_singles: bool) -> list[str]:
    merged, i = [], 0
    while i < len(words):
        pair = " ".join(words[i:i + 2])
        if pair in synonyms.double_words:
            merged.append(synonyms.double_words[pair])
            i += 2
        else:
            if keep_singles:
                merged.append(words[i])
            i += 1
    return merged


def coco_mentions(words: list[str], synonyms: Synonyms) -> list[tuple[str, str]]:
    """(word, canonical class) for every COCO word, after upstream's toilet-seat rule."""
    if "toilet" in words and "seat" in words:  # "the seat of the toilet" must not fire for chair
        words = [w for w in words if w != "seat"]
    return [(w, synonyms.canonical[w]) for w in words if w in synonyms.objects]


def caption_to_words(caption: str, synonyms: Synonyms, toolkit: NLPToolkit) -> tuple[list[tuple[str, str]], list[str]]:
    """CHAIR's rule path: (mentions as (word, class), the merged word list)."""
    words = [toolkit.lemmatize(w) for w in toolkit.tokenize(caption.lower())]
    merged = _merge_double_words(words, synonyms, keep_singles=True)
    return coco_mentions(merged, synonyms), merged


# --------------------------------------------------------------------------------------------------- data

def _load_coco(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid COCO JSON ({e.msg}); re-extract annotations_trainval2014.zip") from None


def build_ground_truth(coco_dir: str | Path, image_ids: Iterable[int], synonyms: Synonyms,
                       toolkit: NLPToolkit) -> dict[int, set[str]]:
    """image id -> canonical COCO classes from instances (train+val) and from the reference captions."""
    coco_dir = Path(coco_dir)
    truth: dict[int, set[str]] = {int(i): set() for i in image_ids}
    names: dict[int, str] = {}
    for split in ("train", "val"):
        instances = _load_coco(coco_dir / f"instances_{split}2014.json")
        names.update({c["id"]: c["name"] for c in instances.get("categories", [])})
        for ann in instances.get("annotations", []):
            if ann["image_id"] in truth:
                name = names.get(ann["category_id"])
                if name not in synonyms.canonical:
                    raise ValueError(f"COCO category {name!r} (id {ann['category_id']}) is not in the synonyms file; "
                                     "use RLHF-V's synonyms_refine.txt")
                truth[ann["image_id"]].add(synonyms.canonical[name])
    for split in ("train", "val"):
        for ann in _load_coco(coco_dir / f"captions_{split}2014.json").get("annotations", []):
            if ann["image_id"] in truth:
                mentions, _ = caption_to_words(ann["caption"], synonyms, toolkit)
                truth[ann["image_id"]].update(cls for _, cls in mentions)
    return truth


def load(data_dir: str | Path, verify_hash: bool = True, with_ground_truth: bool = True,
         nlp: NLPToolkit | None = None) -> list[dict]:
    """Items {id (line number, 0-based), org_idx, image_id, question, image (base64), gt_objects}.

    Building the ground truth reads the COCO 2014 annotations (about 0.5 GB of JSON; tens of seconds).
    """
    data_dir = Path(data_dir)
    check_files(NAME, data_dir, REQUIRED_FILES if with_ground_truth else REQUIRED_FILES[:2], verify_hash=verify_hash)
    items = []
    for i, row in enumerate(read_jsonl(data_dir / REQUIRED_FILES[0].relpath)):
        if "image_id" not in row or "question" not in row:
            raise ValueError(f"{REQUIRED_FILES[0].relpath}: line {i + 1} lacks image_id/question; is this "
                             "obj_halbench_300_with_image.jsonl?")
        items.append({"id": i, "org_idx": row.get("org_idx"), "image_id": int(row["image_id"]),
                      "question": row["question"], "image": row.get("image")})
    if with_ground_truth:
        synonyms = Synonyms.from_file(data_dir / REQUIRED_FILES[1].relpath)
        truth = build_ground_truth(data_dir / "coco" / "annotations", {it["image_id"] for it in items}, synonyms,
                                   nlp or get_toolkit("auto"))
        for it in items:
            it["gt_objects"] = sorted(truth[it["image_id"]])
    return items


def build_model_prompts(items: list[dict], protocol: str = DEFAULT_PROTOCOL) -> list[dict]:
    """Question records {question_id, image_id, image (base64), text}."""
    _check_protocol(protocol)
    return [{"question_id": it["id"], "image_id": it["image_id"], "image": it["image"], "text": it["question"]}
            for it in items]


def read_answers(path: str | Path) -> dict[str, str]:
    """RLHF-V answer JSONL: text from `text` or `answer` ("Assistant:" removed, stripped), matched by
    `question_id` when present, else by line order (upstream takes image ids from the question file by order)."""
    answers: dict[str, str] = {}
    for i, row in enumerate(read_jsonl(path)):
        text = row.get("text", row.get("answer"))
        if text is None:
            raise ValueError(f"{path}: line {i + 1} needs 'text' or 'answer'; got keys {sorted(row)}")
        key = str(row.get("question_id", i))
        if key in answers:
            raise ValueError(f"{path}: line {i + 1}: question_id {key} answered twice")
        answers[key] = text.replace("Assistant:", "").strip()
    return answers


def write_answers(path: str | Path, answers: dict[str, str], questions: dict[str, str] | None = None) -> None:
    write_jsonl(path, ({"question_id": int(qid), "question": (questions or {}).get(qid, ""), "text": text}
                       for qid, text in answers.items()))


# --------------------------------------------------------------------------------------------------- gpt path

def parse_object_list(content: str) -> list[str] | None:
    """The judge's JSON list (or the list on its last line, as upstream); None when unreadable."""
    try:
        parsed = json.loads(content)
    except json.JSONDecodeError:
        if '["' not in content:
            return None
        try:
            parsed = json.loads(content.strip().split("\n")[-1])
        except json.JSONDecodeError:
            return None
    if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
        return None
    return parsed


def refine_objects(objects: list[str], synonyms: Synonyms, toolkit: NLPToolkit) -> list[str]:
    """RLHF-V's get_pred_objs_match for one response: double-word merge, else noun runs; de-duplicated."""
    nouns = synonyms.noun_words()
    refined: list[str] = []
    for obj in objects:
        tokens = toolkit.tokenize(f"a {obj}")
        lemmas = [toolkit.lemmatize(t.lower()) for t in tokens]  # spaCy lemmas are lower-case for common nouns
        merged = _merge_double_words(lemmas, synonyms, keep_singles=False)
        if merged:
            refined.extend(merged)
            continue
        if toolkit.pos_tag is not None:
            is_noun = [tag in ("NNP", "NNPS", "NN", "NNS") for _, tag in toolkit.pos_tag(tokens)]
        else:
            is_noun = [lemma in nouns for lemma in lemmas]
        run: list[str] = []
        for lemma, noun in zip(lemmas, is_noun):
            if noun:
                run.append(lemma)
            elif run:
                refined.append(" ".join(run))
                run = []
        if run:
            refined.append(" ".join(run))
    unique: list[str] = []
    for obj in refined:
        if obj not in unique:
            unique.append(obj)
    return unique


def _gpt_objects(judge: Judge, template: str, question: str, answer: str, tries: int,
                 role: str) -> tuple[list[str] | None, list[str]]:
    if len(answer.strip().split()) <= 3:
        return [], []
    prompt = template.replace("{question}", question).replace("{answer}", answer)
    replies = []
    for attempt in range(tries):
        request = JudgeRequest(messages=[{"role": role, "content": prompt}], temperature=0.0, repeat=attempt,
                               tag="objhal")
        reply = judge.complete(request).text
        replies.append(reply)
        objects = parse_object_list(reply)
        if objects is not None:
            return objects, replies
    return None, replies


# --------------------------------------------------------------------------------------------------- scoring

def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"Object HalBench: unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")


def score(items: list[dict], answers: dict[str, str], *, protocol: str = DEFAULT_PROTOCOL, judge: Judge | None = None,
          synonyms: Synonyms | None = None, nlp: NLPToolkit | None = None, extraction_prompt: str | None = None,
          judge_tries: int = 3, judge_role: str = "user", allow_missing: bool = False, only_answered: bool = False,
          **_: object) -> dict:
    """CHAIR metrics of answers {item id as str: text}; items need `gt_objects` (see load).

    The gpt protocol needs `judge` and `extraction_prompt` (see load_extraction_prompt); upstream sent the
    prompt as a system message, we send it as `judge_role` ("user" by default, which every backend accepts). A
    reply that is not a JSON list after `judge_tries` tries counts as no objects and in `unparsed`.
    """
    _check_protocol(protocol)
    if synonyms is None:
        raise ValueError("Object HalBench: pass synonyms=Synonyms.from_file('<data_dir>/objhal/synonyms_refine.txt')")
    if protocol == "gpt" and (judge is None or extraction_prompt is None):
        raise ValueError("Object HalBench protocol 'gpt' needs a judge (the object extractor) and extraction_prompt="
                         f"load_extraction_prompt('<data_dir>/{EXTRACTION_PROMPT_FILE}'); or use protocol 'rule'")
    toolkit = nlp or get_toolkit("auto")
    answers = {str(k): v for k, v in answers.items()}
    if only_answered:
        items = [it for it in items if str(it["id"]) in answers]
    missing = [it["id"] for it in items if str(it["id"]) not in answers]
    if missing and not allow_missing:
        raise ValueError(f"Object HalBench: {len(missing)} of {len(items)} prompts have no answer (first: "
                         f"{missing[:5]}); answer them, or pass allow_missing=True or only_answered=True")
    if not items:
        raise ValueError("Object HalBench: nothing to score (no items)")

    n_hallucinated_caps = n_coco_caps = hallucinated_mentions = mentions_total = 0
    correct_classes = gt_total = word_total = unparsed = judge_calls = 0
    per_item = []
    for it in items:
        text = answers.get(str(it["id"]), "")
        replies: list[str] = []
        if protocol == "rule":
            mentions, words = caption_to_words(text, synonyms, toolkit)
        else:
            objects, replies = _gpt_objects(judge, extraction_prompt, it["question"], text, judge_tries, judge_role)
            judge_calls += len(replies)
            if objects is None:
                unparsed += 1
                objects = []
            words = refine_objects(objects, synonyms, toolkit)
            mentions = coco_mentions(words, synonyms)
        gt = set(it["gt_objects"])
        hallucinated = [(w, cls) for w, cls in mentions if cls not in gt]
        word_total += len(text.strip().split(" "))
        mentions_total += len(mentions)
        hallucinated_mentions += len(hallucinated)
        n_hallucinated_caps += bool(hallucinated)
        n_coco_caps += bool(mentions)
        correct = {cls for _, cls in mentions if cls in gt}
        correct_classes += len(correct)
        gt_total += len(gt)
        row = {"id": it["id"], "image_id": it["image_id"], "text": text, "mentions": mentions,
               "hallucinated": hallucinated, "gt_objects": sorted(gt), "words": words}
        if replies:
            row["judge_replies"] = replies
        per_item.append(row)

    n = len(items)
    nan = float("nan")
    result = {
        "benchmark": NAME, "protocol": protocol, "n": n, "missing": len(missing), "unparsed": unparsed,
        "headline_metric": "CHAIRs_refine",
        "CHAIRs": n_hallucinated_caps / n,
        "CHAIRs_refine": n_hallucinated_caps / n_coco_caps if n_coco_caps else nan,
        "CHAIRi": hallucinated_mentions / mentions_total if mentions_total else nan,
        "obj_rec": correct_classes / gt_total if gt_total else nan,
        "avg_word_len": word_total / n,
        "sentence_num": n, "coco_sentence_num": n_coco_caps, "coco_mentions": mentions_total,
        "hallucinated_mentions": hallucinated_mentions, "gt_word_count": gt_total,
        "nlp": toolkit.describe(needs_tagger=protocol == "gpt"),
        "judge": getattr(judge, "judge_id", None) if protocol == "gpt" else None, "judge_calls": judge_calls,
        "per_item": per_item,
    }
    # upstream's gpt path lemmatises with spaCy en_core_web_trf, which is never available here
    result["fidelity"] = "approximate" if protocol == "gpt" else toolkit.fidelity()
    return result


def score_file(answers_path: str | Path, data_dir: str | Path, protocol: str = DEFAULT_PROTOCOL,
               judge: Judge | None = None, **kw) -> dict:
    """Load the 300 prompts and COCO ground truth from data_dir, read an answer JSONL and score it. The gpt
    protocol reads its prompt from `extraction_prompt_path` (default <data_dir>/objhal/eval_gpt_obj_halbench.py)."""
    nlp = kw.pop("nlp", None) or get_toolkit("auto")
    items = load(data_dir, verify_hash=kw.pop("verify_hash", True), nlp=nlp)
    synonyms = Synonyms.from_file(Path(data_dir) / REQUIRED_FILES[1].relpath)
    prompt_path = kw.pop("extraction_prompt_path", None)
    if protocol == "gpt" and "extraction_prompt" not in kw:
        kw["extraction_prompt"] = load_extraction_prompt(prompt_path or Path(data_dir) / EXTRACTION_PROMPT_FILE)
    result = score(items, read_answers(answers_path), protocol=protocol, judge=judge, synonyms=synonyms, nlp=nlp, **kw)
    result["answers_file"] = str(answers_path)
    return result
