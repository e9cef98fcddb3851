"""MT-Bench: 80 two-turn questions, graded 1-10 per turn by a judge (FastChat `llm_judge`, single-answer mode).

Faithful to FastChat (lm-sys/FastChat 0e6d3e4, `common.py`, `gen_judgment.py`, `show_result.py`):
- turn 1 uses prompt `single-v1`, or `single-math-v1` with the reference's turn 1 for math/reasoning/coding;
- turn 2 uses `single-v1-multi-turn` / `single-math-v1-multi-turn`: the judge sees both turns (and both reference
  turns) and grades only the second answer;
- messages are [system prompt, user prompt]; the original judge is `gpt-4` (0613), temperature 0, max_tokens 2048;
- the rating is the first `[[x]]`, else the first `[x]`, else -1; -1 ratings are dropped before averaging;
- headline = mean of all remaining turn scores (FastChat's "average"), with turn-1 and turn-2 means beside it.

The judge prompts (`judge_prompts.jsonl`) are FastChat's copyrighted file: the user supplies it and it is
hash-checked; nothing of it is copied here.
"""
from __future__ import annotations

import ast
import hashlib
import random
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmalign_utils.bench.common import BenchmarkDataError, DataFile, check_files, read_jsonl, write_jsonl
from mmalign_utils.bench.judged_common import (
    base_result,
    check_n_runs,
    check_protocol,
    match_answers,
    mean_or_nan,
    require_judge,
)
from mmalign_utils.judges.base import Judge, JudgeRequest

NAME = "mt_bench"
PROTOCOLS = ("fastchat", "fastchat_noisy_image")
DEFAULT_PROTOCOL = "fastchat"  # the paper's Table 4; "fastchat_noisy_image" is its Table 7 (generation differs only)

_FASTCHAT = "lm-sys/FastChat fastchat/llm_judge/data/"
REQUIRED_FILES = [
    DataFile("mt_bench/question.jsonl", _FASTCHAT + "mt_bench/question.jsonl",
             "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7"),
    DataFile("mt_bench/reference_answer/gpt-4.jsonl", _FASTCHAT + "mt_bench/reference_answer/gpt-4.jsonl",
             "f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f"),
    DataFile("mt_bench/judge_prompts.jsonl", _FASTCHAT + "judge_prompts.jsonl",
             "fd283293406d024f44c174b094ef48031d0687a4682fd3a56b29b138f80281b6"),
]

# Categories whose judge sees a reference answer (FastChat NEED_REF_CATS).
NEED_REF_CATS = ("math", "reasoning", "coding")
# Generation temperature per category (FastChat temperature_config); unknown categories get 0.7.
TEMPERATURE_BY_CATEGORY = {
    "writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0, "reasoning": 0.0,
    "stem": 0.1, "humanities": 0.1,
}
DEFAULT_TEMPERATURE = 0.7
GREEDY_BELOW = 1e-4  # FastChat samples only when temperature >= 1e-4
MAX_NEW_TOKENS = 1024
CONV_TEMPLATE = "vicuna_v1"  # what the paper's generator used (LLaVA conv_templates)

ORIGINAL_JUDGE = {"model": "gpt-4 (0613)", "temperature": 0.0, "max_tokens": 2048}
JUDGE_TEMPERATURE = 0.0
JUDGE_MAX_TOKENS = 2048

# The four single-answer prompts FastChat uses, by (turn, needs reference).
PROMPT_NAMES = {
    (1, False): "single-v1", (1, True): "single-math-v1",
    (2, False): "single-v1-multi-turn", (2, True): "single-math-v1-multi-turn",
}
# benchmarks.md §12: SHA-256 of each prompt's system text and template, shortened to prefix...suffix. Used to accept
# a judge_prompts.jsonl from another FastChat commit whose four single prompts are unchanged.
_KNOWN_PROMPT_DIGESTS = {
    "single-v1": (("75357d68", "a4de"), ("0935c7ff", "ccd0")),
    "single-math-v1": (("75357d68", "a4de"), ("8e11dbbf", "b2c7")),
    "single-v1-multi-turn": (("d1e77aa1", "d432"), ("33067cf1", "60fd")),
    "single-math-v1-multi-turn": (("4b8fe808", "7baf"), ("6a2b8ad2", "6b03")),
}

# FastChat's rating patterns: "[[8.5]]", then the backup "[8.5]".
ONE_SCORE_PATTERN = re.compile(r"\[\[(\d+\.?\d*)\]\]")
ONE_SCORE_PATTERN_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


def load(data_dir: str | Path, verify_hash: bool = True) -> list[dict]:
    """The 80 questions: {id, category, turns, reference (two GPT-4 turns or None), image: None}.

    `reference` is filled only for math/reasoning/coding (the only categories whose judge sees it); the
    `reference` field some question lines carry is ignored, as FastChat ignores it.
    """
    check_files(NAME, data_dir, REQUIRED_FILES[:2], verify_hash=verify_hash)
    data_dir = Path(data_dir)
    references = _read_reference_turns(data_dir / REQUIRED_FILES[1].relpath)
    items = []
    for lineno, q in enumerate(read_jsonl(data_dir / REQUIRED_FILES[0].relpath), 1):
        missing = {"question_id", "category", "turns"} - set(q)
        if missing:
            raise BenchmarkDataError(f"{data_dir / REQUIRED_FILES[0].relpath}:{lineno}: lacks {sorted(missing)}")
        needs_ref = q["category"] in NEED_REF_CATS
        if needs_ref and q["question_id"] not in references:
            raise BenchmarkDataError(f"{NAME}: question {q['question_id']} ({q['category']}) needs a reference answer "
                                     f"but {REQUIRED_FILES[1].relpath} has none for it")
        items.append({"id": q["question_id"], "category": q["category"], "turns": list(q["turns"]),
                      "reference": references[q["question_id"]] if needs_ref else None, "image": None})
    return items


def _read_reference_turns(path: Path) -> dict[Any, list[str]]:
    refs = {}
    for lineno, row in enumerate(read_jsonl(path), 1):
        try:
            refs[row["question_id"]] = list(row["choices"][0]["turns"])
        except (KeyError, IndexError, TypeError):
            raise BenchmarkDataError(f"{path}:{lineno}: expected {{question_id, choices:[{{turns:[...]}}]}}") from None
    return refs


def load_judge_prompts(data_dir: str | Path, verify_hash: bool = True) -> dict[str, dict]:
    """{name: prompt record} from the user's FastChat judge_prompts.jsonl.

    Accepted when the file is the known version, or (another FastChat commit) when the four single-answer prompts
    match the known digests of benchmarks.md §12.
    """
    data_dir = Path(data_dir)
    spec = REQUIRED_FILES[2]
    path = data_dir / spec.relpath
    check_files(NAME, data_dir, [spec], verify_hash=False)
    prompts = {row["name"]: row for row in read_jsonl(path)}
    missing = [n for n in PROMPT_NAMES.values() if n not in prompts]
    if missing:
        raise BenchmarkDataError(f"{path}: lacks the judge prompts {missing}; get FastChat's file from {spec.source}")
    if verify_hash:
        file_digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if file_digest != spec.sha256:
            changed = [name for name in PROMPT_NAMES.values() if not _prompt_matches_known(prompts[name])]
            if changed:
                raise BenchmarkDataError(
                    f"{path}: sha256 {file_digest} is not the known version and the prompts {changed} differ from "
                    f"FastChat's; get the official file from {spec.source} (or pass verify_hash=False)")
    return prompts


def _prompt_matches_known(record: dict) -> bool:
    known = _KNOWN_PROMPT_DIGESTS[record["name"]]
    for text, (prefix, suffix) in zip((record["system_prompt"], record["prompt_template"]), known):
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if not (digest.startswith(prefix) and digest.endswith(suffix)):
            return False
    return True


def generation_temperature(category: str) -> float:
    return TEMPERATURE_BY_CATEGORY.get(category, DEFAULT_TEMPERATURE)


def build_model_prompts(items: Sequence[dict], protocol: str = DEFAULT_PROTOCOL, *,
                        noise_images: Sequence[str | Path] | None = None, seed: int = 0) -> list[dict]:
    """What the answer generator needs per question, with FastChat's decoding settings.

    Each entry: {id, category, turns (user turns, in order), temperature, do_sample, max_new_tokens,
    conv_template, images}. Turn 2 must be generated after turn 1, with turn 1's question and answer in the
    conversation (FastChat appends the model's answer before asking turn 2).

    Protocol "fastchat_noisy_image" (the paper's Table 7) prefixes every user turn with "<image>\\n" and gives each
    turn an irrelevant image drawn (seeded) from `noise_images` (the paper drew COCO train2017 images); `images`
    lists the image per turn (None for the plain protocol).
    """
    check_protocol(NAME, protocol, PROTOCOLS)
    noisy = protocol == "fastchat_noisy_image"
    if noisy and not noise_images:
        raise ValueError("protocol 'fastchat_noisy_image' needs noise_images: a list of image paths to draw from "
                         "(the paper used random COCO train2017 images)")
    rng = random.Random(seed)
    prompts = []
    for item in items:
        temperature = generation_temperature(item["category"])
        turns = [("<image>\n" + t) if noisy else t for t in item["turns"]]
        images = [str(rng.choice(list(noise_images))) for _ in turns] if noisy else [None] * len(turns)
        prompts.append({"id": item["id"], "category": item["category"], "turns": turns,
                        "temperature": temperature, "do_sample": temperature >= GREEDY_BELOW,
                        "max_new_tokens": MAX_NEW_TOKENS, "conv_template": CONV_TEMPLATE, "images": images})
    return prompts


def read_answers(path: str | Path) -> dict[Any, list[str]]:
    """{question_id: [answer turn 1, answer turn 2]} from a FastChat model_answer JSONL (choices[0].turns).

    A question answered twice keeps the last line, as FastChat's load_model_answers does.
    """
    answers = {}
    for lineno, row in enumerate(read_jsonl(path), 1):
        try:
            answers[row["question_id"]] = list(row["choices"][0]["turns"])
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"{path}:{lineno}: not a FastChat answer line "
                             f"(expected {{question_id, choices:[{{index, turns:[...]}}]}})") from None
    return answers


def write_answers(path: str | Path, answers: Mapping[Any, Sequence[str]], model_id: str = "model") -> None:
    """Write {question_id: [turn answers]} as a FastChat model_answer JSONL."""
    write_jsonl(path, ({"question_id": qid, "answer_id": uuid.uuid4().hex, "model_id": model_id,
                        "choices": [{"index": 0, "turns": list(turns)}], "tstamp": time.time()}
                       for qid, turns in answers.items()))


def parse_rating(judgment: str) -> float:
    """FastChat's rule: the first [[x]], else the first [x], as a number; -1 when neither occurs."""
    match = ONE_SCORE_PATTERN.search(judgment) or ONE_SCORE_PATTERN_BACKUP.search(judgment)
    return ast.literal_eval(match.group(1)) if match else -1


def judge_request(item: dict, answer_turns: Sequence[str], turn: int, judge_prompts: Mapping[str, dict],
                  repeat: int = 0) -> tuple[JudgeRequest, str]:
    """The judge call FastChat makes for one question and turn (1 or 2); also returns the prompt name used."""
    needs_ref = item["category"] in NEED_REF_CATS
    name = PROMPT_NAMES[(turn, needs_ref)]
    prompt = judge_prompts[name]
    kwargs = {}
    if needs_ref:  # FastChat passes both reference turns to every ref-based template
        kwargs = {"ref_answer_1": item["reference"][0], "ref_answer_2": item["reference"][1]}
    if turn == 1:
        user_prompt = prompt["prompt_template"].format(question=item["turns"][0], answer=answer_turns[0], **kwargs)
    else:
        user_prompt = prompt["prompt_template"].format(
            question_1=item["turns"][0], question_2=item["turns"][1],
            answer_1=answer_turns[0], answer_2=answer_turns[1], **kwargs)
    messages = [{"role": "system", "content": prompt["system_prompt"]}, {"role": "user", "content": user_prompt}]
    request = JudgeRequest(messages=messages, temperature=JUDGE_TEMPERATURE, max_tokens=JUDGE_MAX_TOKENS,
                           repeat=repeat, tag=f"{NAME}:{item['id']}:turn{turn}")
    return request, name


def score(items: Sequence[dict], answers: Mapping[Any, Sequence[str]], *, protocol: str = DEFAULT_PROTOCOL,
          judge: Judge, n_runs: int = 1, judge_prompts: Mapping[str, dict], allow_missing: bool = False) -> dict:
    """Grade every answered question's two turns and aggregate as FastChat's show_result.py.

    Returns the common keys (see judged_common.base_result; headline "overall") plus turn1, turn2, overall,
    per_category (mean of both turns' valid scores), n_judgments, and `records` with every judgment text.
    """
    check_protocol(NAME, protocol, PROTOCOLS)
    check_n_runs(n_runs)
    pairs, missing = match_answers(items, answers, NAME, allow_missing)
    for item, turns in pairs:
        if len(item["turns"]) != 2 or len(turns) < 2:
            raise ValueError(f"{NAME}: question {item['id']} needs two question turns and two answer turns "
                             f"(got {len(item['turns'])} and {len(turns)})")
    per_run, records, failures = [], [], 0
    runs_detail = []
    for run in range(n_runs):
        scores = {1: [], 2: []}
        by_category: dict[str, list[float]] = {}
        for item, turns in pairs:
            for turn in (1, 2):
                request, prompt_name = judge_request(item, turns, turn, judge_prompts, repeat=run)
                reply = judge.complete(request)
                rating = parse_rating(reply.text)
                records.append({"id": item["id"], "turn": turn, "run": run, "prompt_name": prompt_name,
                                "judgment": reply.text, "score": rating})
                if rating == -1:  # show_result.py drops unparsed judgments
                    failures += 1
                    continue
                scores[turn].append(rating)
                by_category.setdefault(item["category"], []).append(rating)
        overall = mean_or_nan(scores[1] + scores[2])
        per_run.append(overall)
        runs_detail.append({"turn1": mean_or_nan(scores[1]), "turn2": mean_or_nan(scores[2]), "overall": overall,
                            "per_category": {c: mean_or_nan(v) for c, v in sorted(by_category.items())}})
    result = base_result(NAME, protocol, judge, ORIGINAL_JUDGE, n=len(pairs), n_parse_failures=failures,
                         n_runs=n_runs, per_run=per_run, headline="overall", n_missing=len(missing))
    last = runs_detail[0] if n_runs == 1 else _average_details(runs_detail)
    result.update(last)
    result["n_judgments"] = 2 * len(pairs) * n_runs
    result["records"] = records
    return result


def _average_details(details: list[dict]) -> dict:
    categories = sorted({c for d in details for c in d["per_category"]})
    return {"turn1": mean_or_nan(d["turn1"] for d in details), "turn2": mean_or_nan(d["turn2"] for d in details),
            "overall": mean_or_nan(d["overall"] for d in details),
            "per_category": {c: mean_or_nan(d["per_category"][c] for d in details if c in d["per_category"])
                             for c in categories}}


def score_file(answers_path: str | Path, data_dir: str | Path, protocol: str = DEFAULT_PROTOCOL,
               judge: Judge | None = None, **kw) -> dict:
    """Load the questions and judge prompts from data_dir, read a FastChat answer file, and score it."""
    require_judge(NAME, judge)
    verify_hash = kw.pop("verify_hash", True)
    items = load(data_dir, verify_hash=verify_hash)
    prompts = load_judge_prompts(data_dir, verify_hash=verify_hash)
    return score(items, read_answers(answers_path), protocol=protocol, judge=judge, judge_prompts=prompts, **kw)

