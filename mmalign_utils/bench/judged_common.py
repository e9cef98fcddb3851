"""What the five judge-scored benchmarks (MT-Bench, AlpacaEval, MM-Vet, LLaVA-Bench, MMHal-Bench) share.

- Official judge prompt texts are copyrighted and user-supplied: `string_literal_from_script` reads a prompt out of
  the official Python script (without running it) and `check_text_sha256` pins it to the known version.
- `match_answers` pairs benchmark items with model answers and refuses silent gaps.
- `base_result` and `run_summary` give every score dict the same bookkeeping keys (n, parse failures, judge id,
  protocol, per-run values, mean and std).
- LLaVA's `model_vqa` answer JSONL (MM-Vet, LLaVA-Bench, MMHal) is read and written here.
"""
from __future__ import annotations

import ast
import hashlib
import json
import math
import statistics
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmalign_utils.bench.common import BenchmarkDataError, read_jsonl, write_jsonl
from mmalign_utils.judges.base import Judge


def sha256_text(text: str) -> str:
    """SHA-256 of a string's UTF-8 bytes (how benchmarks.md §12 pins prompt strings)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def string_literal_from_script(script_path: str | Path, variable: str) -> str:
    """The value of the module-level string assignment `variable = "..."` in a Python file, read with `ast`.

    The official grader scripts (MM-Vet, MMHal) keep their judge prompt in such a variable; parsing instead of
    importing means none of the script's code runs.
    """
    path = Path(script_path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == variable for t in node.targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
            raise BenchmarkDataError(f"{path}: `{variable}` is assigned something other than a string literal; "
                                     f"is this the official script?")
    raise BenchmarkDataError(f"{path}: no module-level assignment to `{variable}` found; is this the official script?")


def check_text_sha256(what: str, text: str, known_sha256: str | None, verify_hash: bool, source: str) -> str:
    """Return the text's SHA-256; raise when it is not the known version (unless verify_hash is False)."""
    digest = sha256_text(text)
    if verify_hash and known_sha256 and digest != known_sha256:
        raise BenchmarkDataError(
            f"{what}: sha256 {digest} ({len(text)} chars) is not the known version {known_sha256}. "
            f"Get the official text from {source}, or pass verify_hash=False to score with this one anyway "
            f"(then the result is not protocol-faithful).")
    return digest


def match_answers(items: Sequence[dict], answers: Mapping[Any, Any], benchmark: str,
                  allow_missing: bool = False) -> tuple[list[tuple[dict, Any]], list[Any]]:
    """Pair each item with its answer by item id. Missing answers raise unless allow_missing (then they are skipped
    and returned, so the caller can report how many). Answers for unknown ids are ignored."""
    pairs, missing = [], []
    for item in items:
        if item["id"] in answers:
            pairs.append((item, answers[item["id"]]))
        else:
            missing.append(item["id"])
    if missing and not allow_missing:
        shown = ", ".join(repr(m)[:80] for m in missing[:5])
        raise ValueError(f"{benchmark}: {len(missing)} of {len(items)} items have no model answer (first: {shown}). "
                         f"Generate the missing answers, or pass allow_missing=True to score only the answered "
                         f"items (the result then reports n_missing and is not comparable to full runs).")
    if not pairs:
        raise ValueError(f"{benchmark}: no item has a model answer; do the answer ids match the benchmark's ids?")
    return pairs, missing


def run_summary(per_run: Sequence[float]) -> dict:
    """Mean, population std (ddof 0, as MM-Vet's evaluator) and median of one headline over repeated judge runs."""
    values = [float(v) for v in per_run]
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return {"mean": math.nan, "std": math.nan, "median": math.nan}
    return {"mean": statistics.fmean(finite), "std": statistics.pstdev(finite), "median": statistics.median(finite)}


def base_result(benchmark: str, protocol: str, judge: Judge | None, original_judge: dict, n: int,
                n_parse_failures: int, n_runs: int, per_run: Sequence[float], headline: str,
                n_missing: int = 0) -> dict:
    """The keys every judged score dict starts with.

    `score` is the headline: the single run's value, or the mean over runs when n_runs > 1 (then `mean`, `std`
    and `median` are also given). `runs` always lists the headline of each run.
    """
    result = {
        "benchmark": benchmark,
        "protocol": protocol,
        "judge": getattr(judge, "judge_id", "none"),
        "original_judge": dict(original_judge),
        "headline": headline,
        "n": n,
        "n_missing": n_missing,
        "n_parse_failures": n_parse_failures,
        "n_runs": n_runs,
        "runs": list(per_run),
    }
    if n_runs > 1:
        summary = run_summary(per_run)
        result.update(summary)
        result["score"] = summary["mean"]
    else:
        result["score"] = per_run[0]
    return result


def mean_or_nan(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.fmean(values) if values else math.nan


def check_protocol(benchmark: str, protocol: str, protocols: Sequence[str]) -> None:
    if protocol not in protocols:
        raise ValueError(f"{benchmark}: unknown protocol {protocol!r}; choose one of {tuple(protocols)}")


def require_judge(benchmark: str, judge: Judge | None) -> Judge:
    if judge is None:
        raise ValueError(f"{benchmark} needs a judge (e.g. from mmalign_utils.judges.factory)")
    return judge


def check_n_runs(n_runs: int) -> None:
    if not isinstance(n_runs, int) or n_runs < 1:
        raise ValueError(f"n_runs must be a positive integer, got {n_runs!r}")


# ---- LLaVA `model_vqa` / `model_vqa_loader` answer files (MM-Vet, LLaVA-Bench) ------------------------------------

def read_llava_answer_jsonl(path: str | Path) -> dict[Any, str]:
    """{question_id: text} from a LLaVA answer file: one JSON object per line with question_id and text."""
    answers: dict[Any, str] = {}
    for lineno, row in enumerate(read_jsonl(path), 1):
        if "question_id" not in row or "text" not in row:
            raise ValueError(f"{path}:{lineno}: a LLaVA answer line needs 'question_id' and 'text' "
                             f"(got keys {sorted(row)})")
        if row["question_id"] in answers:
            raise ValueError(f"{path}:{lineno}: question_id {row['question_id']!r} appears twice; keep one answer")
        answers[row["question_id"]] = row["text"]
    return answers


def write_llava_answer_jsonl(path: str | Path, answers: Mapping[Any, str], prompts: Mapping[Any, str] | None = None,
                             model_id: str = "model") -> None:
    """Write {question_id: text} in LLaVA's answer format: question_id, prompt, text, answer_id, model_id, metadata."""
    prompts = prompts or {}
    write_jsonl(path, ({"question_id": qid, "prompt": prompts.get(qid, ""), "text": text,
                        "answer_id": uuid.uuid4().hex, "model_id": model_id, "metadata": {}}
                       for qid, text in answers.items()))


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); is it a JSON Lines file?") from None


def write_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
