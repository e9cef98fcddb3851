"""MM-Vet: 218 open questions on 200 images, graded 0.0-1.0 by an LLM against a ground truth (yuweihao/MM-Vet).

Faithful to the official `mm-vet_evaluator.py` (acde843):
- one user message: the grader prompt, a newline, then "question | ground truth | prediction | " where the ground
  truth gets spaces around <AND> and <OR> (the open table row that the judge completes);
- original judge `gpt-4-0613`, max_tokens 3, temperature 0;
- the score is the reply's first space-separated token as a float in [0, 1]; on failure the question is re-asked
  with the suffix "\\nPredict the correctness of the answer (digit): ", at temperature 0, 0.5, 1.0, 1.5 (the
  official loop raises the temperature by 0.5 after each re-ask); after 5 failed parses the score is 0.0;
- per run: total = sum of scores / number of questions x 100; per capability = mean over questions that include
  it; per combination = mean over questions whose capability set equals it; all rounded to 1 decimal after
  averaging over runs, as the evaluator's CSV; std is the population std of the run totals.

Two deliberate differences, neither of which changes a score: the official loop sends a sixth request after the
fifth failure and discards its reply (we do not send it), and a reply that parses to NaN or infinity counts as a
failure here (the official check lets NaN through). Combination names are the capabilities sorted and joined by
"_" (the evaluator joins a Python set, whose order varies between runs).

The grader prompt is MM-Vet's copyrighted text: it is read from the user's copy of `mm-vet_evaluator.py` (never
executed) and checked against its known SHA-256.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmalign_utils.bench.common import BenchmarkDataError, DataFile, check_files
from mmalign_utils.bench.judged_common import (
    base_result,
    check_n_runs,
    check_protocol,
    check_text_sha256,
    match_answers,
    read_json,
    read_llava_answer_jsonl,
    require_judge,
    string_literal_from_script,
    write_json,
    write_llava_answer_jsonl,
)
from mmalign_utils.judges.base import Judge, JudgeRequest

NAME = "mm_vet"
PROTOCOLS = ("official",)
DEFAULT_PROTOCOL = "official"

REQUIRED_FILES = [
    DataFile("mm-vet/mm-vet.json", "mm-vet.zip from the MM-Vet release (github.com/yuweihao/MM-Vet), unzipped"),
    # The grader prompt is checked as a string (GRADER_PROMPT_SHA256), so any commit of the script is accepted.
    DataFile("mm-vet/mm-vet_evaluator.py", "yuweihao/MM-Vet mm-vet_evaluator.py (the file itself, not its output)"),
]
IMAGE_DIR = "mm-vet/images"
GRADER_PROMPT_VARIABLE = "prompt"
GRADER_PROMPT_SHA256 = "d1b3e0a5b4e72c888b77164489d705bba4dd149934fff564dfba6443d81afe3f"  # 2,290 chars

ORIGINAL_JUDGE = {"model": "gpt-4-0613", "temperature": 0.0, "max_tokens": 3}
JUDGE_MAX_TOKENS = 3
REASK_SUFFIX = "\nPredict the correctness of the answer (digit): "
MAX_PARSE_TRIES = 5
TEMPERATURE_STEP = 0.5
MAX_NEW_TOKENS = 1024  # LLaVA model_vqa default, greedy (scripts/v1_5/eval/mmvet.sh: --temperature 0)
CONV_TEMPLATE = "vicuna_v1"


def load(data_dir: str | Path, verify_hash: bool = True) -> list[dict]:
    """Items {id: "v1_n", question, reference (ground truth with <AND>/<OR>), image, capabilities, category}."""
    check_files(NAME, data_dir, REQUIRED_FILES[:1], verify_hash=verify_hash)
    data_dir = Path(data_dir)
    metadata_path = data_dir / REQUIRED_FILES[0].relpath
    data = read_json(metadata_path)
    if not isinstance(data, dict):
        raise BenchmarkDataError(f"{metadata_path}: expected an object keyed 'v1_<n>', got {type(data).__name__}")
    items = []
    for key, entry in data.items():
        missing = {"imagename", "capability", "question", "answer"} - set(entry)
        if missing:
            raise BenchmarkDataError(f"{metadata_path}: entry {key!r} lacks {sorted(missing)}")
        capabilities = list(entry["capability"])
        items.append({"id": key, "question": entry["question"], "reference": entry["answer"],
                      "image": str(data_dir / IMAGE_DIR / entry["imagename"]), "capabilities": capabilities,
                      "category": combination_name(capabilities)})
    return items


def load_grader_prompt(data_dir: str | Path, verify_hash: bool = True) -> str:
    """The grader prompt string from the user's mm-vet_evaluator.py, checked against its known SHA-256."""
    check_files(NAME, data_dir, REQUIRED_FILES[1:], verify_hash=False)
    script = Path(data_dir) / REQUIRED_FILES[1].relpath
    prompt = string_literal_from_script(script, GRADER_PROMPT_VARIABLE)
    check_text_sha256(f"{script}: grader prompt", prompt, GRADER_PROMPT_SHA256, verify_hash, REQUIRED_FILES[1].source)
    return prompt


def combination_name(capabilities: Sequence[str]) -> str:
    return "_".join(sorted(set(capabilities)))


def build_model_prompts(items: Sequence[dict], protocol: str = DEFAULT_PROTOCOL) -> list[dict]:
    """Per question: {id, text, image, llava_prompt ("<image>\\n" + question, as LLaVA's model_vqa builds it),
    temperature 0, do_sample False, max_new_tokens, conv_template}. No extra instruction is appended (lmms-eval's
    "think step by step" pre-prompt is a deviation the LLaVA runs never used)."""
    check_protocol(NAME, protocol, PROTOCOLS)
    return [{"id": it["id"], "text": it["question"], "image": it["image"], "llava_prompt": "<image>\n" + it["question"],
             "temperature": 0.0, "do_sample": False, "max_new_tokens": MAX_NEW_TOKENS, "conv_template": CONV_TEMPLATE}
            for it in items]


def read_answers(path: str | Path) -> dict[str, str]:
    """{"v1_n": prediction} from the MM-Vet submission JSON ({"v1_0": "...", ...}) or a LLaVA answer JSONL
    (question_id n maps to "v1_n", as LLaVA's convert_mmvet_for_eval.py does)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return {_mmvet_key(qid): text for qid, text in read_llava_answer_jsonl(path).items()}
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path}: an MM-Vet submission is one JSON object {{\"v1_0\": \"answer\", ...}}; "
                         f"for LLaVA answer lines use a .jsonl file")
    return dict(data)


def _mmvet_key(question_id: Any) -> str:
    text = str(question_id)
    return text if text.startswith("v1_") else f"v1_{text}"


def write_answers(path: str | Path, answers: Mapping[str, str], model_id: str = "model") -> None:
    """Write {"v1_n": prediction}: a .json path gets the submission format, a .jsonl path LLaVA answer lines
    (question_id n)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        write_llava_answer_jsonl(path, {int(k.removeprefix("v1_")): v for k, v in answers.items()}, model_id=model_id)
    else:
        write_json(path, dict(answers))


def grading_prompt(grader_prompt: str, item: dict, prediction: str, reask: bool = False) -> str:
    """The official user message: prompt, newline, the open table row (and the re-ask suffix on retries)."""
    ground_truth = item["reference"].replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    row = " | ".join([item["question"], ground_truth, prediction, ""])
    return grader_prompt + "\n" + row + (REASK_SUFFIX if reask else "")


def parse_score(content: str) -> float | None:
    """The first space-separated token as a float in [0, 1]; None when it is not one."""
    token = content.split(" ")[0].strip()
    try:
        value = float(token)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0.0 or value > 1.0:
        return None
    return value


def grade_one(judge: Judge, grader_prompt: str, item: dict, prediction: str, run: int = 0) -> tuple[float, list[str]]:
    """Grade one prediction with the official re-ask loop. Returns (score, every reply text in order)."""
    replies = []
    temperature = 0.0
    reask = False
    for attempt in range(MAX_PARSE_TRIES):
        request = JudgeRequest.from_prompt(grading_prompt(grader_prompt, item, prediction, reask=reask),
                                           temperature=temperature, max_tokens=JUDGE_MAX_TOKENS, repeat=run,
                                           tag=f"{NAME}:{item['id']}:try{attempt + 1}")
        text = judge.complete(request).text
        replies.append(text)
        value = parse_score(text)
        if value is not None:
            return value, replies
        # The official loop re-asks first at the same temperature, then raises it by 0.5 per further try.
        if reask:
            temperature += TEMPERATURE_STEP
        reask = True
    return 0.0, replies


def score(items: Sequence[dict], answers: Mapping[str, str], *, protocol: str = DEFAULT_PROTOCOL, judge: Judge,
          n_runs: int = 1, grader_prompt: str, allow_missing: bool = False, decimal_places: int = 1) -> dict:
    """Grade every answered question n_runs times and aggregate as mm-vet_evaluator.py.

    Returns the common keys (headline "total", x100, rounded to `decimal_places`) plus per_capability,
    per_combination, capability_counts, combination_counts and `records` (every reply text per question and run).
    A question whose 5 parses all failed counts as one parse failure (score 0.0).
    """
    check_protocol(NAME, protocol, PROTOCOLS)
    check_n_runs(n_runs)
    pairs, missing = match_answers(items, answers, NAME, allow_missing)
    capability_counts: dict[str, int] = {}
    combination_counts: dict[str, int] = {}
    for item, _ in pairs:
        for capability in set(item["capabilities"]):
            capability_counts[capability] = capability_counts.get(capability, 0) + 1
        combo = combination_name(item["capabilities"])
        combination_counts[combo] = combination_counts.get(combo, 0) + 1

    totals, cap_runs, combo_runs, records, failures = [], [], [], [], 0
    for run in range(n_runs):
        cap_sum = dict.fromkeys(capability_counts, 0.0)
        combo_sum = dict.fromkeys(combination_counts, 0.0)
        total = 0.0
        for item, prediction in pairs:
            value, replies = grade_one(judge, grader_prompt, item, prediction, run=run)
            failed = parse_score(replies[-1]) is None
            failures += failed
            records.append({"id": item["id"], "run": run, "replies": replies, "score": value, "failed": failed})
            total += value
            for capability in set(item["capabilities"]):
                cap_sum[capability] += value
            combo_sum[combination_name(item["capabilities"])] += value
        totals.append(total / len(pairs) * 100)
        cap_runs.append({c: s / capability_counts[c] * 100 for c, s in cap_sum.items()})
        combo_runs.append({c: s / combination_counts[c] * 100 for c, s in combo_sum.items()})

    def averaged(per_run: list[dict]) -> dict:
        return {k: round(sum(r[k] for r in per_run) / n_runs, decimal_places)
                for k in sorted(per_run[0], key=lambda k: (-capability_counts.get(k, combination_counts.get(k, 0)), k))}

    rounded_runs = [round(t, decimal_places) for t in totals]
    result = base_result(NAME, protocol, judge, ORIGINAL_JUDGE, n=len(pairs), n_parse_failures=failures,
                         n_runs=n_runs, per_run=rounded_runs, headline="total", n_missing=len(missing))
    mean_total = sum(totals) / n_runs
    result["score"] = result["total"] = round(mean_total, decimal_places)
    if n_runs > 1:  # the evaluator's std: population std of the run totals, rounded
        result["mean"] = result["total"]
        result["std"] = round(math.sqrt(sum((t - mean_total) ** 2 for t in totals) / n_runs), decimal_places)
    result["per_capability"] = averaged(cap_runs)
    result["per_combination"] = averaged(combo_runs)
    result["capability_counts"] = capability_counts
    result["combination_counts"] = combination_counts
    result["records"] = records
    return result


def score_file(answers_path: str | Path, data_dir: str | Path, protocol: str = DEFAULT_PROTOCOL,
               judge: Judge | None = None, **kw) -> dict:
    """Load mm-vet.json and the grader prompt from data_dir, read the answers, and score them."""
    require_judge(NAME, judge)
    verify_hash = kw.pop("verify_hash", True)
    items = load(data_dir, verify_hash=verify_hash)
    prompt = load_grader_prompt(data_dir, verify_hash=verify_hash)
    return score(items, read_answers(answers_path), protocol=protocol, judge=judge, grader_prompt=prompt, **kw)


