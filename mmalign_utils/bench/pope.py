"""POPE (object existence yes/no questions on COCO val2014), scored per split with three protocols.

Protocols (see docs/benchmarks_rules.md):
- "llava" (paper; = POPE's evaluate.py = LLaVA's eval_pope.py): keep the text before the first ".", drop commas,
  split on single spaces; any token exactly "No", "no" or "not" means no, anything else (even "") means yes.
  Positive class "yes"; yes-ratio = share of *predictions* that are yes. No zero-division guards upstream: a
  0/0 here gives NaN instead of a crash.
- "lmms_eval": lower-case + strip, then exact "yes"/"no"; anything else is neither (wrong for accuracy, absent
  from TP/FP/FN). lmms-eval prints the yes-ratio of the *labels* (a bug); we report the predictions' yes-ratio as
  `yes_ratio` and lmms-eval's number as `label_yes_ratio`.
- "vlmevalkit": VLMEvalKit's YOrN extraction (yes without no -> Yes, no without yes -> No, else Unknown; Unknown
  goes to the judge when one is given, 5 tries at temperature 0.5*i); Unknown counts as a "no" prediction in
  P/R/F1 and as wrong in accuracy.

Headline (all protocols): `f1_mean` = mean F1 of the three splits (the paper prints it as 0.859). All metrics
are fractions in [0, 1].
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from mmalign_utils.bench.common import DataFile, check_files, iter_json_or_jsonl, read_jsonl, write_jsonl
from mmalign_utils.bench.mmbench import template_from_function
from mmalign_utils.judges.base import Judge, JudgeRequest

NAME = "pope"
SPLITS = ("random", "popular", "adversarial")
PROTOCOLS = {
    "llava": "POPE evaluate.py / LLaVA eval_pope.py: 'no'/'No'/'not' token in the first sentence, else yes (paper)",
    "lmms_eval": "lmms-eval pope: exact lower-cased yes/no, others neither; zero-division guards",
    "vlmevalkit": "VLMEvalKit YOrN extraction, Unknown -> optional LLM judge, Unknown counts as no",
}
DEFAULT_PROTOCOL = "llava"

_HEAD = {  # RUCAIBox/POPE 3df3ba1: 3,000 questions per split
    "random": "ac25245170b975a5bdf9080b23fd431dfe6be458bc038259c1f4f09a6bef7994",
    "popular": "72c1a8ad45d0c13514f5f22598261df41d3b533854d29682e924db50ed8aa753",
    "adversarial": "420b3407db1fa9f1187a805dca41cb7b97fd91504e6c2179706188c107fb8ef8",
}
_LLAVA_PIN = {  # RUCAIBox/POPE e3e3926 (LLaVA's submodule pin): random has 2,910 lines
    "random": "c16b65d2df6d70bb0814c8a4375833d39cdb09928fd936d3fc546491efa37f35",
    "popular": "5b16653023bf4f64d57eb0d168259de6627f5cde7538b85ebed3cc33034aa6cc",
    "adversarial": "1d8f0906a9b50c05640f6f23abfac97523be2a1bed28f7eadc63b811699b2d26",
}
VERSIONS = {digest: f"3df3ba1 (HEAD, {split})" for split, digest in _HEAD.items()}
VERSIONS.update({digest: f"e3e3926 (LLaVA pin, {split})" for split, digest in _LLAVA_PIN.items()})

REQUIRED_FILES = [
    DataFile(
        relpath=f"pope/coco_pope_{split}.json",
        source=f"github.com/RUCAIBox/POPE output/coco/coco_pope_{split}.json (commit 3df3ba1, or e3e3926 as "
               "pinned by LLaVA); images: COCO val2014 (cocodataset.org) under <data_dir>/coco/val2014",
        sha256=_HEAD[split],
        alternatives=(_LLAVA_PIN[split],),
    )
    for split in SPLITS
]

LLAVA_SUFFIX = "\nAnswer the question using a single word or phrase."
VLMEVALKIT_SUFFIX = " Please answer yes or no."  # (unverified) VLMEvalKit's yes/no instruction


# --------------------------------------------------------------------------------------------------- data

def item_id(split: str, question_id: int | str) -> str:
    """POPE's question_id restarts at 1 in every split, so our ids carry the split."""
    return f"{split}-{question_id}"


def load(data_dir: str | Path, verify_hash: bool = True, image_dir: str | Path | None = None) -> list[dict]:
    """The three splits as items {id, question_id, split, category, question, image, image_path, label}."""
    return load_with_versions(data_dir, verify_hash, image_dir)[0]


def load_with_versions(data_dir: str | Path, verify_hash: bool = True,
                       image_dir: str | Path | None = None) -> tuple[list[dict], dict[str, str]]:
    """Items plus {relpath: version name or sha256} for the files that were read."""
    data_dir = Path(data_dir)
    seen = check_files(NAME, data_dir, REQUIRED_FILES, verify_hash=verify_hash)
    image_root = Path(image_dir) if image_dir else data_dir / "coco" / "val2014"
    items = []
    for split, data_file in zip(SPLITS, REQUIRED_FILES):
        path = data_dir / data_file.relpath
        for lineno, row in enumerate(iter_json_or_jsonl(path), 1):
            missing = {"question_id", "image", "text", "label"} - set(row)
            if missing or row["label"] not in ("yes", "no"):
                raise ValueError(f"{path}: record {lineno} lacks {sorted(missing)} or has a label other than "
                                 f"yes/no ({row.get('label')!r}); is this a POPE file?")
            items.append({
                "id": item_id(split, row["question_id"]), "question_id": row["question_id"], "split": split,
                "category": split, "question": row["text"], "image": row["image"],
                "image_path": str(image_root / row["image"]), "label": row["label"],
            })
    versions = {rel: VERSIONS.get(digest, digest) for rel, digest in seen.items()}
    return items, versions


def build_model_prompts(items: list[dict], protocol: str = DEFAULT_PROTOCOL) -> list[dict]:
    """Question records for LLaVA's model_vqa_loader: {question_id, image, text, category}."""
    _check_protocol(protocol)
    suffix = VLMEVALKIT_SUFFIX if protocol == "vlmevalkit" else LLAVA_SUFFIX
    return [{"question_id": it["id"], "image": it["image"], "text": it["question"] + suffix,
             "category": it["split"]} for it in items]


def read_answers(path: str | Path) -> dict[str, str]:
    """LLaVA answer JSONL ({question_id, prompt, text, ...}) -> {question_id as str: text}."""
    answers: dict[str, str] = {}
    for lineno, row in enumerate(read_jsonl(path), 1):
        if "question_id" not in row or "text" not in row:
            raise ValueError(f"{path}:{lineno}: an answer needs 'question_id' and 'text' (LLaVA model_vqa_loader "
                             f"format); got keys {sorted(row)}")
        key = str(row["question_id"])
        if key in answers:
            raise ValueError(f"{path}:{lineno}: question_id {key!r} answered twice; keep one answer per question")
        answers[key] = row["text"]
    return answers


def write_answers(path: str | Path, answers: dict[str, str], model_id: str = "") -> None:
    """Write {question_id: text} in LLaVA's answer format (prompt left empty)."""
    write_jsonl(path, ({"question_id": qid, "prompt": "", "text": text, "answer_id": "", "model_id": model_id,
                        "metadata": {}} for qid, text in answers.items()))


# --------------------------------------------------------------------------------------------------- parsing

def parse_llava(text: str) -> str:
    """POPE evaluate.py / LLaVA eval_pope.py: 'no' or 'yes' (never unparsed)."""
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def parse_lmms_eval(text: str) -> str | None:
    pred = text.lower().strip()
    return pred if pred in ("yes", "no") else None


_VQA_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
              "?", "!"]
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: the VQA evaluation's look-behind typo, kept as upstream


def _vqa_process_punctuation(text: str) -> str:
    out = text
    for p in _VQA_PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, 32)  # upstream passes re.UNICODE (= 32) as the count argument


def parse_vlmevalkit(text: str) -> str | None:
    """VLMEvalKit YOrN_Extraction: 'yes', 'no' or None (Unknown)."""
    words = _vqa_process_punctuation(text.lower()).split()
    if "yes" in words and "no" not in words:
        return "yes"
    if "yes" not in words and "no" in words:
        return "no"
    return None


JUDGE_TEMPLATE_FILE = "pope/yorn.py"
JUDGE_TEMPLATE_SOURCE = "VLMEvalKit vlmeval/dataset/utils/yorn.py (YOrN_match_prompt)"


def load_judge_template(script_path: str | Path) -> str:
    """VLMEvalKit's yes/no matching prompt (2 '{}' slots: question, prediction), read from its script with `ast`
    (prompt texts are not shipped here)."""
    return _checked_template(template_from_function(script_path, "YOrN_match_prompt"), str(script_path))


def _checked_template(template: str, where: str) -> str:
    if template.count("{}") != 2:
        raise ValueError(f"{where}: the YOrN template needs 2 '{{}}' slots (question, prediction); "
                         f"it has {template.count('{}')}")
    return template


# --------------------------------------------------------------------------------------------------- scoring

def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"POPE: unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")


def _div(num: float, den: float, guarded: bool) -> float:
    if den == 0:
        return 0.0 if guarded else math.nan
    return num / den


def _split_metrics(rows: list[dict], protocol: str) -> dict:
    """rows: {label, pred} with pred in yes/no/None."""
    tp = sum(r["label"] == "yes" and r["pred"] == "yes" for r in rows)
    fp = sum(r["label"] == "no" and r["pred"] == "yes" for r in rows)
    tn = sum(r["label"] == "no" and r["pred"] == "no" for r in rows)
    fn = sum(r["label"] == "yes" and r["pred"] == "no" for r in rows)
    unparsed = sum(r["pred"] is None for r in rows)
    n = len(rows)
    if protocol == "vlmevalkit":
        fn += sum(r["label"] == "yes" and r["pred"] is None for r in rows)  # Unknown is a 0 (no) prediction
    guarded = protocol != "llava"
    precision = _div(tp, tp + fp, guarded)
    recall = _div(tp, tp + fn, guarded)
    f1 = _div(2 * precision * recall, precision + recall, guarded)
    metrics = {
        "n": n, "tp": tp, "fp": fp, "tn": tn, "fn": fn, "unparsed": unparsed,
        "acc": _div(sum(r["label"] == r["pred"] for r in rows), n, guarded),
        "precision": precision, "recall": recall, "f1": f1,
        "yes_ratio": _div(sum(r["pred"] == "yes" for r in rows), n, guarded),
    }
    if protocol == "lmms_eval":
        metrics["label_yes_ratio"] = _div(sum(r["label"] == "yes" for r in rows), n, True)
    return metrics


def _vlmevalkit_judge(judge: Judge, template: str, question: str, text: str,
                      tries: int = 5) -> tuple[str | None, list[str]]:
    replies = []
    for attempt in range(tries):
        # upstream's "Question: {}?" doubles POPE's own question mark; kept as upstream
        request = JudgeRequest.from_prompt(template.format(question, text), temperature=0.5 * attempt,
                                           repeat=attempt, tag=f"pope:{question[:40]}")
        reply = judge.complete(request).text
        replies.append(reply)
        parsed = parse_vlmevalkit(reply)
        if parsed is not None:
            return parsed, replies
    return None, replies


def score(items: list[dict], answers: dict[str, str], *, protocol: str = DEFAULT_PROTOCOL, judge: Judge | None = None,
          judge_template: str | None = None, allow_missing: bool = False, only_answered: bool = False,
          **_: object) -> dict:
    """Score POPE answers ({item id: text}) per split; see the module docstring for the protocols.

    A judge (vlmevalkit only) needs `judge_template`, VLMEvalKit's prompt (see load_judge_template). Missing
    answers raise unless `allow_missing` (scored as the empty reply) or `only_answered` (dropped).
    """
    _check_protocol(protocol)
    if protocol == "vlmevalkit" and judge is not None:
        if judge_template is None:
            raise ValueError("POPE: a vlmevalkit judge needs judge_template=; load it with load_judge_template("
                             f"'<data_dir>/{JUDGE_TEMPLATE_FILE}') from {JUDGE_TEMPLATE_SOURCE}")
        _checked_template(judge_template, "judge_template")
    answers = {str(k): v for k, v in answers.items()}
    if only_answered:
        items = [it for it in items if it["id"] in answers]
    missing = [it["id"] for it in items if it["id"] not in answers]
    if missing and not allow_missing:
        raise ValueError(f"POPE: {len(missing)} of {len(items)} questions have no answer (first: {missing[:5]}); "
                         "answer them, or pass allow_missing=True (scored as empty replies) or only_answered=True")
    if not items:
        raise ValueError("POPE: nothing to score (no items)")
    per_item, judge_calls = [], 0
    for it in items:
        text = answers.get(it["id"], "")
        judge_replies: list[str] = []
        if protocol == "llava":
            pred = parse_llava(text)
        elif protocol == "lmms_eval":
            pred = parse_lmms_eval(text)
        else:
            pred = parse_vlmevalkit(text)
            if pred is None and judge is not None:
                pred, judge_replies = _vlmevalkit_judge(judge, judge_template, it["question"], text)
                judge_calls += len(judge_replies)
        row = {"id": it["id"], "split": it["split"], "label": it["label"], "text": text, "pred": pred}
        if judge_replies:
            row["judge_replies"] = judge_replies
        per_item.append(row)

    splits = {s: _split_metrics([r for r in per_item if r["split"] == s], protocol)
              for s in SPLITS if any(r["split"] == s for r in per_item)}
    result = {
        "benchmark": NAME, "protocol": protocol, "n": len(per_item),
        "unparsed": sum(r["pred"] is None for r in per_item), "missing": len(missing),
        "headline_metric": "f1_mean",
        "f1_mean": sum(m["f1"] for m in splits.values()) / len(splits),
        "acc_mean": sum(m["acc"] for m in splits.values()) / len(splits),
        "splits": splits,
        "pooled": _split_metrics(per_item, protocol),
        "judge": getattr(judge, "judge_id", None) if protocol == "vlmevalkit" else None,
        "judge_calls": judge_calls,
        "per_item": per_item,
    }
    if len(splits) < len(SPLITS):
        result["note"] = f"only {sorted(splits)} present; f1_mean is over those splits"
    return result


def remap_llava_question_ids(answers: dict[str, str], question_file: str | Path, items: list[dict]) -> dict[str, str]:
    """Answers to a question file with other ids (e.g. LLaVA's llava_pope_test.jsonl, which adds `category`)
    -> answers keyed by our item ids, matched on (category, image, question text without the suffix)."""
    ours: dict[tuple, str] = {}
    for it in items:
        key = (it["split"], it["image"], it["question"].strip())
        if key in ours:
            raise ValueError(f"POPE: two questions share {key}; cannot match by text")
        ours[key] = it["id"]
    remapped = {}
    for lineno, row in enumerate(read_jsonl(question_file), 1):
        if str(row.get("question_id")) not in answers:
            continue
        text = row.get("text", "")
        for suffix in (LLAVA_SUFFIX, VLMEVALKIT_SUFFIX):
            text = text.removesuffix(suffix)
        key = (row.get("category"), row.get("image"), text.strip())
        if key not in ours:
            raise ValueError(f"{question_file}:{lineno}: no POPE question matches category/image/text {key}")
        remapped[ours[key]] = answers[str(row["question_id"])]
    return remapped


def score_file(answers_path: str | Path, data_dir: str | Path, protocol: str = DEFAULT_PROTOCOL,
               judge: Judge | None = None, **kw) -> dict:
    """Load the POPE files from data_dir, read a LLaVA answer file and score it.

    `question_file=`: the question file the answers were made from, when its ids are not ours (LLaVA's own
    llava_pope_test.jsonl); answers are then matched by split, image and question text. A vlmevalkit judge reads
    its prompt from `judge_template_path` (default <data_dir>/pope/yorn.py).
    """
    items, versions = load_with_versions(data_dir, verify_hash=kw.pop("verify_hash", True))
    template_path = kw.pop("judge_template_path", None)
    if protocol == "vlmevalkit" and judge is not None and "judge_template" not in kw:
        kw["judge_template"] = load_judge_template(template_path or Path(data_dir) / JUDGE_TEMPLATE_FILE)
    answers = read_answers(answers_path)
    question_file = kw.pop("question_file", None)
    if question_file is not None:
        answers = remap_llava_question_ids(answers, question_file, items)
    result = score(items, answers, protocol=protocol, judge=judge, **kw)
    result["data_version"] = versions
    result["answers_file"] = str(answers_path)
    return result
