"""LLaVA-Bench (In-the-Wild): 60 questions on 24 images; a judge scores the GPT-4 reference and the candidate 1-10
side by side; the headline is mean(candidate) / mean(reference) x 100.

Faithful to LLaVA (haotian-liu/LLaVA c121f04, `llava/eval/eval_gpt_review_bench.py` + `summarize_gpt_review.py`):
- system message "You are a helpful and precise assistant for checking the quality of the answer."; one user
  message with [Context] (the image's captions joined by newlines), [Question], [Assistant 1] = the GPT-4
  reference, [Assistant 2] = the candidate, [System] = the rule prompt of `rule.json` for "llava_bench_<category>";
- original judge `gpt-4-0314`, temperature 0.2, max_tokens 1024;
- parsing: line 1, commas to spaces, split on " "; exactly two tokens become floats, otherwise [-1, -1];
- per category and "all": the column means of the (reference, candidate) pairs, each rounded to 3 decimals, then
  round(candidate / reference x 100, 1).

Protocols:
- "llava" (default, what the paper's numbers used): failed parses stay in the means as [-1, -1], exactly as
  LLaVA and lmms-eval do, and the context is built with LLaVA's `"\\n".join(caption)`. When a caption is one
  string (as in the released context.jsonl) that join puts every character on its own line: the official judge
  saw the caption that way, so this protocol does too.
- "recommended": a string caption is used as it is; a failed parse is re-asked (another repeat index, up to
  `max_retries` times) and still-failed questions are left out of the means and counted in `n_excluded`.

The rule prompts are LLaVA's copyrighted `rule.json`, supplied by the user and hash-checked.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmalign_utils.bench.common import BenchmarkDataError, DataFile, check_files, read_jsonl
from mmalign_utils.bench.judged_common import (
    base_result,
    check_n_runs,
    check_protocol,
    match_answers,
    read_json,
    read_llava_answer_jsonl,
    require_judge,
    sha256_text,
    write_llava_answer_jsonl,
)
from mmalign_utils.judges.base import Judge, JudgeRequest
from mmalign_utils.stamps import sha256_file

NAME = "llava_bench_in_the_wild"
PROTOCOLS = ("llava", "recommended")
DEFAULT_PROTOCOL = "llava"

_HF = "HF dataset liuhaotian/llava-bench-in-the-wild: "
REQUIRED_FILES = [
    DataFile("llava-bench-in-the-wild/questions.jsonl", _HF + "questions.jsonl"),
    DataFile("llava-bench-in-the-wild/context.jsonl", _HF + "context.jsonl"),
    DataFile("llava-bench-in-the-wild/answers_gpt4.jsonl", _HF + "answers_gpt4.jsonl"),
    DataFile("llava-bench-in-the-wild/rule.json", "haotian-liu/LLaVA llava/eval/table/rule.json",
             "dd7345a44ce9f7a24e51a30ee030cdab32346f9d08e3359c80545ff1312b1e07"),
]
IMAGE_DIR = "llava-bench-in-the-wild/images"
# benchmarks.md §12: the llava_bench_* rule prompt (872 chars; the same for conv, detail and complex).
RULE_PROMPT_SHA256 = "2ce22b562d6008864970ea863ac8a4d385ea6f2e64ab1313a23f825202a9529d"
CATEGORIES = ("conv", "detail", "complex")

JUDGE_SYSTEM_MESSAGE = "You are a helpful and precise assistant for checking the quality of the answer."
ORIGINAL_JUDGE = {"model": "gpt-4-0314", "temperature": 0.2, "max_tokens": 1024}
JUDGE_TEMPERATURE = 0.2
JUDGE_MAX_TOKENS = 1024
FAILED_PAIR = (-1.0, -1.0)
RETRY_REPEAT_STRIDE = 1000  # retry k of run r uses repeat r + 1000 k, so retries miss the cache of earlier tries
MAX_NEW_TOKENS = 1024  # LLaVA model_vqa default; scripts/v1_5/eval/llavabench.sh uses --temperature 0
CONV_TEMPLATE = "vicuna_v1"


def load(data_dir: str | Path, verify_hash: bool = True) -> list[dict]:
    """Items {id: question_id, question, image, category, caption (as in context.jsonl: string or list),
    reference: the GPT-4 answer text}."""
    check_files(NAME, data_dir, REQUIRED_FILES[:3], verify_hash=verify_hash)
    data_dir = Path(data_dir)
    questions_path, context_path, answers_path = (data_dir / f.relpath for f in REQUIRED_FILES[:3])
    captions = {row["image"]: row["caption"] for row in read_jsonl(context_path)}
    references = {row["question_id"]: row["text"] for row in read_jsonl(answers_path)}
    items = []
    for lineno, q in enumerate(read_jsonl(questions_path), 1):
        missing = {"question_id", "image", "text", "category"} - set(q)
        if missing:
            raise BenchmarkDataError(f"{questions_path}:{lineno}: lacks {sorted(missing)}")
        if q["image"] not in captions:
            raise BenchmarkDataError(f"{questions_path}:{lineno}: image {q['image']!r} has no line in {context_path}")
        if q["question_id"] not in references:
            raise BenchmarkDataError(f"{questions_path}:{lineno}: question {q['question_id']} has no GPT-4 reference "
                                     f"in {answers_path}")
        items.append({"id": q["question_id"], "question": q["text"], "image": str(data_dir / IMAGE_DIR / q["image"]),
                      "category": q["category"], "caption": captions[q["image"]],
                      "reference": references[q["question_id"]]})
    return items


def load_rules(data_dir: str | Path, verify_hash: bool = True) -> dict[str, dict]:
    """LLaVA's rule.json ({key: {role, prompt}}). Accepted when the file is the known version, or when its three
    llava_bench_* prompts have the known string SHA-256 (another LLaVA commit with the same rules)."""
    spec = REQUIRED_FILES[3]
    check_files(NAME, data_dir, [spec], verify_hash=False)
    path = Path(data_dir) / spec.relpath
    rules = read_json(path)
    keys = [f"llava_bench_{c}" for c in CATEGORIES]
    missing = [k for k in keys if k not in rules]
    if missing:
        raise BenchmarkDataError(f"{path}: lacks the rules {missing}; get LLaVA's file from {spec.source}")
    if verify_hash and sha256_file(path) != spec.sha256:
        changed = [k for k in keys if sha256_text(rules[k]["prompt"]) != RULE_PROMPT_SHA256]
        if changed:
            raise BenchmarkDataError(f"{path}: not the known rule.json and the prompts {changed} differ from LLaVA's; "
                                     f"get the official file from {spec.source} (or pass verify_hash=False)")
    return rules


def build_model_prompts(items: Sequence[dict], protocol: str = DEFAULT_PROTOCOL) -> list[dict]:
    """Per question: {id, text, image, llava_prompt ("<image>\\n" + question), temperature 0, do_sample False,
    max_new_tokens, conv_template} (LLaVA's model_vqa with --temperature 0 --conv-mode vicuna_v1)."""
    check_protocol(NAME, protocol, PROTOCOLS)
    return [{"id": it["id"], "text": it["question"], "image": it["image"], "llava_prompt": "<image>\n" + it["question"],
             "temperature": 0.0, "do_sample": False, "max_new_tokens": MAX_NEW_TOKENS, "conv_template": CONV_TEMPLATE}
            for it in items]


def read_answers(path: str | Path) -> dict[Any, str]:
    """{question_id: text} from a LLaVA answer JSONL (model_vqa / model_vqa_loader output)."""
    return read_llava_answer_jsonl(path)


def write_answers(path: str | Path, answers: Mapping[Any, str], model_id: str = "model",
                  prompts: Mapping[Any, str] | None = None) -> None:
    """Write {question_id: text} as LLaVA answer lines (question_id, prompt, text, answer_id, model_id, metadata)."""
    write_llava_answer_jsonl(path, answers, prompts=prompts, model_id=model_id)


def context_text(caption: str | Sequence[str], protocol: str = DEFAULT_PROTOCOL) -> str:
    """The [Context] block. "llava": LLaVA's "\\n".join(caption) as written, which splits a plain string into one
    character per line; "recommended": a string is kept whole, a list is joined by newlines."""
    if protocol == "recommended" and isinstance(caption, str):
        return caption
    return "\n".join(caption)


def review_content(item: dict, candidate: str, rule: Mapping[str, str], protocol: str = DEFAULT_PROTOCOL) -> str:
    """The user message of eval_gpt_review_bench.py: context, question, reference as assistant 1, candidate as
    assistant 2, then the rule prompt."""
    role = rule["role"]
    return (f"[Context]\n{context_text(item['caption'], protocol)}\n\n"
            f"[Question]\n{item['question']}\n\n"
            f"[{role} 1]\n{item['reference']}\n\n[End of {role} 1]\n\n"
            f"[{role} 2]\n{candidate}\n\n[End of {role} 2]\n\n"
            f"[System]\n{rule['prompt']}\n\n")


def parse_score_pair(review: str) -> tuple[float, float]:
    """LLaVA's parse_score: first line, commas to spaces, split on single spaces; two tokens -> floats, else -1s."""
    pair = review.split("\n")[0].replace(",", " ").split(" ")
    if len(pair) != 2:
        return FAILED_PAIR
    try:
        return float(pair[0]), float(pair[1])
    except ValueError:
        return FAILED_PAIR


def score(items: Sequence[dict], answers: Mapping[Any, str], *, protocol: str = DEFAULT_PROTOCOL, judge: Judge,
          n_runs: int = 1, rules: Mapping[str, Mapping[str, str]], max_retries: int = 2,
          allow_missing: bool = False) -> dict:
    """Review every answered question and summarise as summarize_gpt_review.py.

    Returns the common keys (headline "relative all") plus relative {all, complex, conv, detail},
    ref_mean and cand_mean per category (3 decimals, as the summariser rounds them), n_excluded (recommended
    protocol) and `records` with every review text and parsed pair.
    """
    check_protocol(NAME, protocol, PROTOCOLS)
    check_n_runs(n_runs)
    pairs, missing = match_answers(items, answers, NAME, allow_missing)
    retries = max_retries if protocol == "recommended" else 0
    per_run, run_details, records = [], [], []
    failures = excluded = 0
    for run in range(n_runs):
        tuples: dict[str, list[tuple[float, float]]] = {}
        for item, candidate in pairs:
            rule_key = f"llava_bench_{item['category']}"
            if rule_key not in rules:
                raise ValueError(f"{NAME}: no rule {rule_key!r} for question {item['id']} (category "
                                 f"{item['category']!r}); LLaVA asserts the same")
            content = review_content(item, candidate, rules[rule_key], protocol)
            reviews, pair = [], FAILED_PAIR
            for attempt in range(retries + 1):
                request = JudgeRequest(
                    messages=[{"role": "system", "content": JUDGE_SYSTEM_MESSAGE},
                              {"role": "user", "content": content}],
                    temperature=JUDGE_TEMPERATURE, max_tokens=JUDGE_MAX_TOKENS,
                    repeat=run + RETRY_REPEAT_STRIDE * attempt, tag=f"{NAME}:{item['id']}:try{attempt + 1}")
                reviews.append(judge.complete(request).text)
                pair = parse_score_pair(reviews[-1])
                if pair != FAILED_PAIR:
                    break
            failed = pair == FAILED_PAIR
            failures += failed
            records.append({"id": item["id"], "run": run, "category": item["category"], "reviews": reviews,
                            "tuple": list(pair), "failed": failed})
            if failed and protocol == "recommended":
                excluded += 1
                continue
            tuples.setdefault(item["category"], []).append(pair)
            tuples.setdefault("all", []).append(pair)
        details = summarize(tuples)
        run_details.append(details)
        per_run.append(details["relative"].get("all", float("nan")))
    result = base_result(NAME, protocol, judge, ORIGINAL_JUDGE, n=len(pairs), n_parse_failures=failures,
                         n_runs=n_runs, per_run=per_run, headline="relative all", n_missing=len(missing))
    if n_runs == 1:
        result.update(run_details[0])
    else:
        result["per_run_details"] = run_details
        keys = sorted({k for d in run_details for k in d["relative"]})
        result["relative"] = {k: sum(d["relative"][k] for d in run_details) / n_runs for k in keys}
    result["n_excluded"] = excluded
    result["records"] = records
    return result


def summarize(tuples: Mapping[str, Sequence[tuple[float, float]]]) -> dict:
    """summarize_gpt_review.py: per key (sorted), column means rounded to 3 decimals, then the candidate/reference
    ratio x 100 rounded to 1 decimal (NaN when the reference mean is 0 or nothing is left)."""
    relative, ref_mean, cand_mean = {}, {}, {}
    for key in sorted(tuples):
        values = tuples[key]
        ref = round(sum(v[0] for v in values) / len(values), 3)
        cand = round(sum(v[1] for v in values) / len(values), 3)
        ref_mean[key], cand_mean[key] = ref, cand
        relative[key] = round(cand / ref * 100, 1) if ref else float("nan")
    return {"relative": relative, "ref_mean": ref_mean, "cand_mean": cand_mean}


def score_file(answers_path: str | Path, data_dir: str | Path, protocol: str = DEFAULT_PROTOCOL,
               judge: Judge | None = None, **kw) -> dict:
    """Load the questions, captions, references and rules from data_dir, read the answers, and score them."""
    require_judge(NAME, judge)
    verify_hash = kw.pop("verify_hash", True)
    items = load(data_dir, verify_hash=verify_hash)
    rules = load_rules(data_dir, verify_hash=verify_hash)
    return score(items, read_answers(answers_path), protocol=protocol, judge=judge, rules=rules, **kw)

