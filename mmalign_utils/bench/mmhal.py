"""MMHal-Bench (LLaVA-RLHF): 96 questions on OpenImages pictures; a text-only judge rates each answer 0-6 for
informativeness and hallucination, given the image's labels, the question and a human answer.

Faithful to `Eval/eval_gpt_mmhal.py` (llava-rlhf/LLaVA-RLHF 830a083):
- one user message: the grader template formatted with (image contents joined by ", ", question, standard
  answer, model answer); original judge `gpt-4-0314`, temperature 0 (max_tokens not set there; we send
  `judge_max_tokens`, 1024 by default);
- the reply is lower-cased; if exactly one of "rating: 0" ... "rating: 6" occurs in it, that is the score,
  otherwise the score is 0 (counted here as a parse failure);
- average score; hallucination rate = share of scores below 3; per question type, where the type is the record's
  position modulo 8 (the file cycles through the 8 types; the script relies on that order);
- RLHF-V's extra: informativeness = mean(s - 3 if s >= 3 else s) / 3 x 100.

The grader template is the paper authors' text: it is read from the user's copy of eval_gpt_mmhal.py (never
executed) and checked against its known SHA-256.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path

from mmalign_utils.bench.common import BenchmarkDataError, DataFile, check_files
from mmalign_utils.bench.judged_common import (
    base_result,
    check_n_runs,
    check_protocol,
    check_text_sha256,
    match_answers,
    mean_or_nan,
    read_json,
    read_llava_answer_jsonl,
    require_judge,
    string_literal_from_script,
    write_json,
)
from mmalign_utils.judges.base import Judge, JudgeRequest

NAME = "mmhal_bench"
PROTOCOLS = ("llava_rlhf",)
DEFAULT_PROTOCOL = "llava_rlhf"  # not in the paper; LLaVA-RLHF's protocol

REQUIRED_FILES = [
    DataFile("mmhal/response_template.json", "HF dataset Shengcao1006/MMHal-Bench: response_template.json",
             "28ed24e19ffef292597c35f1dad37760b2e0a088b3b40ca3b50f105fc1b951bb"),
    # The template is checked as a string (GRADER_TEMPLATE_SHA256), so any copy of the script is accepted.
    DataFile("mmhal/eval_gpt_mmhal.py", "llava-rlhf/LLaVA-RLHF Eval/eval_gpt_mmhal.py "
                                        "(or eval_gpt4.py of the MMHal-Bench dataset repo)"),
]
IMAGE_DIR = "mmhal/images"  # optional: the judge is text-only; images are needed only to generate answers
GRADER_TEMPLATE_VARIABLE = "template"
GRADER_TEMPLATE_SHA256 = "2c73d8c50f1740d000fae62cfeed103c2f7a5bcfa904b27e6e09900e7ce600cc"  # 6,631 chars
QUESTION_TYPES = ("attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic",
                  "other")
RATINGS = range(7)
HALLUCINATION_BELOW = 3

ORIGINAL_JUDGE = {"model": "gpt-4-0314", "temperature": 0.0, "max_tokens": None}
MAX_NEW_TOKENS = 1024  # model_vqa_mmhal.py without --short_eval; eval_mmhal.sh: --temperature 0 --test-prompt ''
CONV_TEMPLATE = "vicuna_v1"


def load(data_dir: str | Path, verify_hash: bool = True) -> list[dict]:
    """Items {id: position 0..95, question, reference (gt_answer), image_content, image, category (type by
    position % 8), question_type (as written in the file), topic, record (the original template record)}."""
    check_files(NAME, data_dir, REQUIRED_FILES[:1], verify_hash=verify_hash)
    data_dir = Path(data_dir)
    path = data_dir / REQUIRED_FILES[0].relpath
    records = read_json(path)
    if not isinstance(records, list):
        raise BenchmarkDataError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    items = []
    for index, record in enumerate(records):
        missing = {"question", "gt_answer", "image_content"} - set(record)
        if missing:
            raise BenchmarkDataError(f"{path}: record {index} lacks {sorted(missing)}")
        items.append({"id": index, "question": record["question"], "reference": record["gt_answer"],
                      "image_content": list(record["image_content"]), "image": _image_path(data_dir, record),
                      "category": QUESTION_TYPES[index % len(QUESTION_TYPES)],
                      "question_type": record.get("question_type"), "topic": record.get("question_topic"),
                      "record": record})
    return items


def _image_path(data_dir: Path, record: dict) -> str | None:
    """Where the image would be: images/<file name of image_src>, else images/<image_id>.jpg (None if neither)."""
    candidates = []
    if record.get("image_src"):
        candidates.append(data_dir / IMAGE_DIR / str(record["image_src"]).rsplit("/", 1)[-1])
    if record.get("image_id"):
        candidates.append(data_dir / IMAGE_DIR / f"{record['image_id']}.jpg")
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    return str(candidates[0]) if candidates else None


def load_grader_template(data_dir: str | Path, verify_hash: bool = True) -> str:
    """The grader template string from the user's eval_gpt_mmhal.py, checked against its known SHA-256."""
    check_files(NAME, data_dir, REQUIRED_FILES[1:], verify_hash=False)
    script = Path(data_dir) / REQUIRED_FILES[1].relpath
    template = string_literal_from_script(script, GRADER_TEMPLATE_VARIABLE)
    check_text_sha256(f"{script}: grader template", template, GRADER_TEMPLATE_SHA256, verify_hash,
                      REQUIRED_FILES[1].source)
    return template


def build_model_prompts(items: Sequence[dict], protocol: str = DEFAULT_PROTOCOL) -> list[dict]:
    """Per question: {id, text, image, llava_prompt ("<image>\\n" + question, no suffix), temperature 0,
    do_sample False, max_new_tokens 1024, conv_template}."""
    check_protocol(NAME, protocol, PROTOCOLS)
    return [{"id": it["id"], "text": it["question"], "image": it["image"], "llava_prompt": "<image>\n" + it["question"],
             "temperature": 0.0, "do_sample": False, "max_new_tokens": MAX_NEW_TOKENS, "conv_template": CONV_TEMPLATE}
            for it in items]


def read_answers(path: str | Path) -> dict[int, str]:
    """{position: model_answer} from a filled response template (JSON list of records with model_answer), or
    {question_id: text} from LLaVA answer lines (.jsonl) whose question_id is the record position."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return {int(qid): text for qid, text in read_llava_answer_jsonl(path).items()}
    records = read_json(path)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected the response template's JSON list of records")
    answers = {}
    for index, record in enumerate(records):
        if "model_answer" not in record:
            raise ValueError(f"{path}: record {index} has no 'model_answer'")
        answers[index] = record["model_answer"]
    return answers


def write_answers(path: str | Path, answers: Mapping[int, str], items: Sequence[dict]) -> None:
    """Write the response template with model_answer filled in (every record of `items`; unanswered ones keep
    their template value)."""
    records = []
    for item in items:
        record = copy.deepcopy(item["record"])
        if item["id"] in answers:
            record["model_answer"] = answers[item["id"]]
        records.append(record)
    write_json(path, records)


def grading_prompt(template: str, item: dict, answer: str) -> str:
    return template.format(", ".join(item["image_content"]), item["question"], item["reference"], answer)


def parse_rating(reply: str) -> int | None:
    """The rating when exactly one distinct "rating: k" (k = 0..6) occurs, case-insensitive; None otherwise."""
    lowered = reply.lower()
    found = [k for k in RATINGS if f"rating: {k}" in lowered]
    return found[0] if len(found) == 1 else None


def informativeness(scores: Sequence[int]) -> float:
    """RLHF-V's informativeness: mean of (s - 3 if s >= 3 else s), over 3, x 100."""
    return mean_or_nan((s - 3 if s >= 3 else s) for s in scores) / 3 * 100


def score(items: Sequence[dict], answers: Mapping[int, str], *, protocol: str = DEFAULT_PROTOCOL, judge: Judge,
          n_runs: int = 1, grader_template: str, judge_max_tokens: int = 1024, allow_missing: bool = False) -> dict:
    """Rate every answered question and aggregate as eval_gpt_mmhal.py.

    Returns the common keys (headline "average score", 0-6) plus average, hallucination_rate, per_type (by
    position % 8), per_topic, informativeness, and `records` with every reply. Unparsed replies score 0.
    """
    check_protocol(NAME, protocol, PROTOCOLS)
    check_n_runs(n_runs)
    pairs, missing = match_answers(items, answers, NAME, allow_missing)
    per_run, details, records, failures = [], [], [], 0
    for run in range(n_runs):
        scores: list[int] = []
        by_type: dict[str, list[int]] = {}
        by_topic: dict[str, list[int]] = {}
        for item, answer in pairs:
            request = JudgeRequest.from_prompt(grading_prompt(grader_template, item, answer), temperature=0.0,
                                               max_tokens=judge_max_tokens, repeat=run, tag=f"{NAME}:{item['id']}")
            reply = judge.complete(request).text
            rating = parse_rating(reply)
            failures += rating is None
            value = 0 if rating is None else rating
            records.append({"id": item["id"], "run": run, "reply": reply, "score": value, "failed": rating is None})
            scores.append(value)
            by_type.setdefault(item["category"], []).append(value)
            by_topic.setdefault(str(item.get("topic")), []).append(value)
        average = mean_or_nan(scores)
        per_run.append(average)
        details.append({
            "average": average,
            "hallucination_rate": mean_or_nan(1.0 if s < HALLUCINATION_BELOW else 0.0 for s in scores),
            "per_type": {t: mean_or_nan(by_type[t]) for t in QUESTION_TYPES if t in by_type},
            "per_topic": {t: mean_or_nan(v) for t, v in sorted(by_topic.items())},
            "informativeness": informativeness(scores),
        })
    result = base_result(NAME, protocol, judge, ORIGINAL_JUDGE, n=len(pairs), n_parse_failures=failures,
                         n_runs=n_runs, per_run=per_run, headline="average score", n_missing=len(missing))
    if n_runs == 1:
        result.update(details[0])
    else:
        result["per_run_details"] = details
        for key in ("average", "hallucination_rate", "informativeness"):
            result[key] = mean_or_nan(d[key] for d in details)
    result["records"] = records
    return result


def score_file(answers_path: str | Path, data_dir: str | Path, protocol: str = DEFAULT_PROTOCOL,
               judge: Judge | None = None, **kw) -> dict:
    """Load the template records and grader template from data_dir, read the answers, and score them."""
    require_judge(NAME, judge)
    verify_hash = kw.pop("verify_hash", True)
    items = load(data_dir, verify_hash=verify_hash)
    template = load_grader_template(data_dir, verify_hash=verify_hash)
    return score(items, read_answers(answers_path), protocol=protocol, judge=judge, grader_template=template, **kw)


