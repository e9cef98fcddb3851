"""AlpacaEval: 805 instructions; a judge compares the model's output with a reference model's; the headline is
the win rate against the reference.

Faithful to alpaca_eval (tatsu-lab/alpaca_eval cd543a1: annotators/pairwise_evaluator.py, utils.py,
completion_parsers.py, metrics/helpers.py, metrics/glm_winrate.py):
- rows pair output_1 = the reference output and output_2 = the model output, matched by instruction; identical
  outputs get preference 0 (a draw) without a judge call;
- per row the two outputs are swapped when random.Random("is_switched_outputs" + instruction + str(seed))
  .choices([False, True]) says so (seed 0); the prompt template's {instruction}, {output_1}, {output_2} are
  replaced (first occurrence each, in order of first appearance) and the ChatML-like text becomes chat messages;
  a swapped preference maps back to 3 - x;
- protocol "alpaca_eval_gpt4" (AlpacaEval 1.0, the paper's): `gpt-4-0613`, temperature 0, max_tokens 100; the
  reply is a Python list of {'model', 'rank'} and the preference is model_1's rank (1 or 2), NaN otherwise;
- protocol "weighted_alpaca_eval_gpt4_turbo" (AlpacaEval 2.0): max_tokens 1, temperature 1, top-5 log
  probabilities of the first token; preference = 2 - P(m) / (P(m) + P(M)) ("m" = output_1); NaN when neither
  token is among the top 5. The judge backend must return the log-probabilities (see LogprobJudgeRequest);
- win rate: 0 -> 1.5 (legacy draws), drop non-preferences (NaN or outside [1, 2]), x = preference - 1;
  win_rate = mean(x) x 100, standard_error = sem(x) x 100 (ddof 1), n_wins = #(x > 0.5), n_wins_base =
  #(x < 0.5), n_draws = #(preference in {0, 1.5}); discrete_win_rate rounds the preferences first;
- length-controlled win rate (optional; an AlpacaEval 2.0 metric, reported only as an extra on 1.0): the
  logistic GLM of glm_winrate.py, fitted with scikit-learn exactly as there, with the user's df_gamed.csv.

The annotator prompts are AlpacaEval's files, supplied by the user and hash-checked.
"""
from __future__ import annotations

import ast
import json
import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmalign_utils.bench.common import BenchmarkDataError, DataFile, check_files
from mmalign_utils.bench.judged_common import base_result, check_n_runs, check_protocol, match_answers, read_json, require_judge, write_json
from mmalign_utils.judges.base import Judge, JudgeReply, JudgeRequest

NAME = "alpaca_eval"
PROTOCOLS = ("alpaca_eval_gpt4", "weighted_alpaca_eval_gpt4_turbo")
DEFAULT_PROTOCOL = "alpaca_eval_gpt4"  # AlpacaEval 1.0, what the paper reports

_HF = "HF dataset tatsu-lab/alpaca_eval: "
_CONFIGS = "tatsu-lab/alpaca_eval src/alpaca_eval/evaluators_configs/"
EVAL_SET = {
    "alpaca_eval_gpt4": DataFile("alpaca_eval/alpaca_eval.json",
                                 _HF + "alpaca_eval.json (config alpaca_eval; references by text_davinci_003)"),
    "weighted_alpaca_eval_gpt4_turbo": DataFile(
        "alpaca_eval/alpaca_eval_gpt4_baseline.json",
        _HF + "alpaca_eval_gpt4_baseline.json (config alpaca_eval_gpt4_baseline; references by gpt4_turbo)"),
}
ANNOTATOR_PROMPT = {
    "alpaca_eval_gpt4": DataFile("alpaca_eval/alpaca_eval_gpt4/alpaca_eval.txt",
                                 _CONFIGS + "alpaca_eval_gpt4/alpaca_eval.txt",
                                 "cf4bace43fa6ac71944b9ca2506587ad7c509478a219e98a3950abf9d5b42a98"),
    "weighted_alpaca_eval_gpt4_turbo": DataFile(
        "alpaca_eval/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt",
        _CONFIGS + "alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt",
        "784227e6dc2832fc08c43d2c8ea3a308e7523780187a1aaad2f85e30bac85f62"),
}
DF_GAMED = DataFile("alpaca_eval/df_gamed.csv", _HF + "df_gamed.csv (instruction difficulty and gamed baselines)")
REQUIRED_FILES = [EVAL_SET[DEFAULT_PROTOCOL], ANNOTATOR_PROMPT[DEFAULT_PROTOCOL]]

ORIGINAL_JUDGE = {
    "alpaca_eval_gpt4": {"model": "gpt-4-0613", "temperature": 0.0, "max_tokens": 100},
    "weighted_alpaca_eval_gpt4_turbo": {"model": "gpt-4-1106-preview", "temperature": 1.0, "max_tokens": 1,
                                        "top_logprobs": 5},
}
DEFAULT_SEED = 0  # PairwiseAnnotator's seed; it seeds the per-instruction output swap
NUMERATOR_TOKEN = "m"  # AlpacaEval 2.0: "m" says output_1 (after the swap) is better
DENOMINATOR_TOKENS = ("m", "M")
PLACEHOLDER = re.compile(r"{([^ \s]+?)}")  # alpaca_eval utils.make_prompts
ROW_FIELDS = ("instruction", "output_1", "output_2")
MAX_NEW_TOKENS = 1024  # paper: greedy, 1024 new tokens
CONV_TEMPLATE = "vicuna_v1"
GLM_BASELINE_LAMBDA = 0.2  # length_controlled_v1: regularize_to_baseline_lambda
GLM_N_SPLITS = 5


@dataclass
class LogprobJudgeRequest(JudgeRequest):
    """A JudgeRequest that also asks for the top-k log-probabilities of the first generated token.

    A backend that supports it reads `top_logprobs` and returns them in `JudgeReply.raw["top_logprobs"]` as
    [{"token": str, "logprob": float}, ...] (or OpenAI's raw shape raw["logprobs"]["content"][0]["top_logprobs"]).
    """

    top_logprobs: int = 5

    def decoding_key(self) -> str:
        key = json.loads(super().decoding_key())
        key["top_logprobs"] = self.top_logprobs
        return json.dumps(key, sort_keys=True)


def required_files(protocol: str = DEFAULT_PROTOCOL, length_controlled: bool = False) -> list[DataFile]:
    check_protocol(NAME, protocol, PROTOCOLS)
    return [EVAL_SET[protocol], ANNOTATOR_PROMPT[protocol]] + ([DF_GAMED] if length_controlled else [])


def load(data_dir: str | Path, verify_hash: bool = True, protocol: str = DEFAULT_PROTOCOL) -> list[dict]:
    """Items {id: instruction (the key AlpacaEval matches on), index (position in the eval set), instruction,
    question, reference (the reference model's output), reference_generator, category (the `dataset` column)}."""
    check_protocol(NAME, protocol, PROTOCOLS)
    spec = EVAL_SET[protocol]
    check_files(NAME, data_dir, [spec], verify_hash=verify_hash)
    path = Path(data_dir) / spec.relpath
    rows = read_json(path)
    if not isinstance(rows, list):
        raise BenchmarkDataError(f"{path}: expected a JSON list of {{instruction, output, generator, dataset}}")
    counts = Counter(row["instruction"] for row in rows)
    duplicated = [i for i, c in counts.items() if c > 1]
    if duplicated:
        raise BenchmarkDataError(f"{path}: {len(duplicated)} instructions occur more than once (first: "
                                 f"{duplicated[0][:60]!r}); AlpacaEval matches outputs by instruction")
    return [{"id": row["instruction"], "index": i, "instruction": row["instruction"], "question": row["instruction"],
             "reference": row["output"], "reference_generator": row.get("generator"),
             "category": row.get("dataset")} for i, row in enumerate(rows)]


def load_annotator_prompt(data_dir: str | Path, protocol: str = DEFAULT_PROTOCOL, verify_hash: bool = True) -> str:
    """The annotator's prompt template file (hash-checked)."""
    check_protocol(NAME, protocol, PROTOCOLS)
    spec = ANNOTATOR_PROMPT[protocol]
    check_files(NAME, data_dir, [spec], verify_hash=verify_hash)
    return (Path(data_dir) / spec.relpath).read_text(encoding="utf-8")


def load_df_gamed(data_dir: str | Path):
    """df_gamed.csv as a pandas DataFrame (the length-controlled GLM's instruction difficulties and gamed rows)."""
    import pandas as pd

    check_files(NAME, data_dir, [DF_GAMED], verify_hash=False)
    return pd.read_csv(Path(data_dir) / DF_GAMED.relpath)


def build_model_prompts(items: Sequence[dict], protocol: str = DEFAULT_PROTOCOL) -> list[dict]:
    """Per instruction: {id, text, temperature 0, do_sample False, max_new_tokens 1024, conv_template}."""
    check_protocol(NAME, protocol, PROTOCOLS)
    return [{"id": it["id"], "text": it["instruction"], "temperature": 0.0, "do_sample": False,
             "max_new_tokens": MAX_NEW_TOKENS, "conv_template": CONV_TEMPLATE} for it in items]


def read_answers(path: str | Path) -> dict[str, str]:
    """{instruction: output} from AlpacaEval model outputs (JSON list of {instruction, output, generator}) or
    from an annotation file (JSON list with output_2 = the model's output). Duplicated instructions with
    different outputs are refused (AlpacaEval would silently pair them)."""
    rows = read_json(path)
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of {{instruction, output, generator}}")
    answers: dict[str, str] = {}
    for i, row in enumerate(rows):
        key = "output" if "output" in row else "output_2"
        if "instruction" not in row or key not in row:
            raise ValueError(f"{path}: row {i} needs 'instruction' and 'output' (or 'output_2' in annotations)")
        instruction, output = row["instruction"], row[key]
        if instruction in answers and answers[instruction] != output:
            raise ValueError(f"{path}: row {i} repeats instruction {instruction[:60]!r} with a different output; "
                             f"keep one output per instruction")
        answers[instruction] = output
    return answers


def write_answers(path: str | Path, answers: Mapping[str, str], generator: str = "model",
                  items: Sequence[dict] | None = None) -> None:
    """Write AlpacaEval model outputs: [{instruction, output, generator[, dataset]}], in eval-set order when
    `items` is given."""
    if items is not None:
        rows = [{"instruction": it["instruction"], "output": answers[it["id"]], "generator": generator,
                 "dataset": it.get("category")} for it in items if it["id"] in answers]
    else:
        rows = [{"instruction": k, "output": v, "generator": generator} for k, v in answers.items()]
    write_json(path, rows)


def read_annotations(path: str | Path) -> list[dict]:
    """An AlpacaEval annotation file (JSON list with instruction, output_1, output_2, preference, ...)."""
    rows = read_json(path)
    if not isinstance(rows, list) or not all("preference" in r for r in rows):
        raise ValueError(f"{path}: expected AlpacaEval annotations: a JSON list of rows with 'preference'")
    return rows


# ---- prompt construction ----------------------------------------------------------------------------------------

def fill_template(template: str, row: Mapping[str, str]) -> str:
    """utils.make_prompts with batch_size 1: each placeholder must occur once; the first occurrence of each is
    replaced, in order of first appearance (so a placeholder-looking text inside an earlier value can be hit)."""
    counts = Counter(PLACEHOLDER.findall(template))
    wrong = {k: n for k, n in counts.items() if n != 1}
    if wrong:
        raise ValueError(f"annotator template: every placeholder must occur once (batch size 1), got {wrong}")
    unknown = [k for k in counts if k not in row]
    if unknown:
        raise ValueError(f"annotator template has placeholders {unknown} that AlpacaEval rows do not provide "
                         f"({list(ROW_FIELDS)})")
    prompt = template
    for key in counts:
        prompt = prompt.replace("{" + key + "}", str(row[key]), 1)
    return prompt


def prompt_to_chatml(prompt: str, start_token: str = "<|im_start|>", end_token: str = "<|im_end|>") -> list[dict]:
    """utils.prompt_to_chatml: split the ChatML-like text into messages; "system name=x" keeps name=x."""
    prompt = prompt.strip()
    if not (prompt.startswith(start_token) and prompt.endswith(end_token)):
        raise ValueError(f"annotator prompt must start with {start_token} and end with {end_token}")
    messages = []
    for part in prompt.split(start_token)[1:]:
        header, _, rest = part.partition("\n")
        role = header.strip()
        content = rest.split(end_token, 1)[0].strip()
        extra = {}
        if role.startswith("system") and role != "system":
            extra = dict(s.split("=", 1) for s in role.split("system", 1)[-1].split(" ") if s)
            role = "system"
        messages.append({"content": content, "role": role, **extra})
    return messages


def is_switched(instruction: str, seed: int = DEFAULT_SEED) -> bool:
    """Whether AlpacaEval shows the two outputs swapped for this instruction (seeded by the instruction)."""
    return random.Random("is_switched_outputs" + instruction + str(seed)).choices([False, True], k=1)[0]


# ---- parsing ----------------------------------------------------------------------------------------------------

def ranking_preference(completion: str) -> float:
    """ranking_parser: the completion is a Python list of {'model', 'rank'}; model_1's rank if 1 or 2, else NaN."""
    try:
        ranked = ast.literal_eval(completion)
        rank = [c for c in ranked if c["model"] == "model_1"][0]["rank"]
    except Exception:  # noqa: BLE001 - the official parser maps every failure to NaN
        return math.nan
    return float(rank) if rank in (1, 2) else math.nan


def logprob_preference(top_logprobs: Sequence[Mapping[str, Any]], numerator_token: str = NUMERATOR_TOKEN,
                       denominator_tokens: Sequence[str] = DENOMINATOR_TOKENS) -> float:
    """logprob_parser with is_binarize False: 2 - P(numerator) / sum P(denominator); NaN if no token is there."""
    wanted = set(denominator_tokens) | {numerator_token}
    logprobs = {t["token"]: float(t["logprob"]) for t in top_logprobs if t["token"] in wanted}
    if not logprobs:
        return math.nan
    numerator = logprobs.get(numerator_token, -math.inf)
    present = [logprobs.get(t, -math.inf) for t in denominator_tokens]
    top = max(present)
    denominator = top + math.log(sum(math.exp(v - top) for v in present))
    return 2 - math.exp(numerator - denominator)


def reply_top_logprobs(reply: JudgeReply) -> list[dict]:
    """The first token's top log-probabilities from a judge reply, in either accepted shape."""
    raw = reply.raw or {}
    if "top_logprobs" in raw:
        return list(raw["top_logprobs"])
    try:
        return list(raw["logprobs"]["content"][0]["top_logprobs"])
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"{NAME}: the judge {reply.judge_id!r} returned no log-probabilities; the "
                         f"weighted_alpaca_eval_gpt4_turbo protocol needs a backend that honours "
                         f"LogprobJudgeRequest.top_logprobs") from None


# ---- metrics ----------------------------------------------------------------------------------------------------

def _is_preference(value: float) -> bool:
    return not math.isnan(value) and 1 <= value <= 2


def win_rate_summary(preferences: Sequence[float]) -> dict:
    """describe_head2head (AbsoluteScoringRule) plus discrete_win_rate (ZeroOneScoringRule), as get_winrate."""
    prefs = [1.5 if p == 0 else float(p) for p in (math.nan if p is None else p for p in preferences)]
    n_draws = sum(1 for p in prefs if p == 1.5)
    x = [p - 1 for p in prefs if _is_preference(p)]
    n = len(x)
    mean = sum(x) / n if n else math.nan
    sem = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1) / n) if n > 1 else math.nan
    # ZeroOneScoringRule: 1.5 -> 0 (draw), round, then draws count as 1.5 again.
    discrete = [1.5 if p == 1.5 else float(round(p)) for p in prefs if not math.isnan(p)]
    discrete_x = [p - 1 for p in discrete if _is_preference(p)]
    return {
        "win_rate": mean * 100, "standard_error": sem * 100, "n_wins": sum(v > 0.5 for v in x),
        "n_wins_base": sum(v < 0.5 for v in x), "n_draws": n_draws, "n_total": n,
        "discrete_win_rate": (sum(discrete_x) / len(discrete_x) * 100) if discrete_x else math.nan,
    }


def length_controlled_win_rate(preferences: Sequence[float], reference_lengths: Sequence[int],
                               model_lengths: Sequence[int], indices: Sequence[int], df_gamed,
                               regularize_to_baseline_lambda: float = GLM_BASELINE_LAMBDA,
                               n_splits: int = GLM_N_SPLITS) -> float:
    """glm_winrate.get_length_controlled_winrate (length_controlled_v1) for one model against the reference.

    `indices` are the rows' positions in the eval set (they pick the instruction difficulty). The GLM has no
    intercept and three terms: tanh(std_delta_len) (reference minus model length in characters, over its std),
    instruction_difficulty and not_gamed_baseline; the gamed baselines of df_gamed are mixed in with weight
    lambda / 2. It is fitted with scikit-learn's LogisticRegressionCV (L1, liblinear, 5 GroupKFold splits,
    continuous targets by duplicating rows) as the official code does, and the prediction at zero length
    difference is averaged (x 100).
    """
    try:
        import numpy as np
        import pandas as pd
        import sklearn
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.metrics import make_scorer
        from sklearn.model_selection import GroupKFold
    except ImportError:
        raise ImportError("the length-controlled win rate needs scikit-learn: pip install scikit-learn") from None

    gamed = df_gamed.drop(columns=["model"], errors="ignore")
    needed = {"index", "instruction_difficulty", "preference", "std_delta_len", "not_gamed_baseline"}
    if needed - set(gamed.columns):
        raise BenchmarkDataError(f"df_gamed lacks the columns {sorted(needed - set(gamed.columns))}; "
                                 f"use AlpacaEval's df_gamed.csv ({DF_GAMED.source})")
    difficulty = gamed.drop_duplicates("index").set_index("index")["instruction_difficulty"]
    unknown = sorted(set(indices) - set(difficulty.index))
    if unknown:
        raise BenchmarkDataError(f"df_gamed has no instruction_difficulty for eval-set positions {unknown[:5]}; "
                                 f"it must come from the same eval set ({DF_GAMED.source})")
    delta = pd.Series(reference_lengths, dtype=float) - pd.Series(model_lengths, dtype=float)
    df = pd.DataFrame({"preference": pd.Series(preferences, dtype=float).replace({0.0: 1.5}) - 1,
                       "index": list(indices)})
    df["std_delta_len"] = delta / delta.std()
    df["instruction_difficulty"] = difficulty.loc[df["index"]].to_numpy()
    df["not_gamed_baseline"] = True
    df_test = df[["instruction_difficulty", "not_gamed_baseline"]].copy()
    df_test["std_delta_len"] = 0.0

    train = pd.concat([gamed[list(needed)], df], axis=0, ignore_index=True)
    not_gamed = train["not_gamed_baseline"].astype(bool)
    weight = not_gamed.astype(float) + (regularize_to_baseline_lambda * (~not_gamed)).astype(float) / 2
    keep = train["preference"].notna()
    train, weight = train[keep].reset_index(drop=True), weight[keep].reset_index(drop=True)

    def design(frame):  # the formula's three columns, in its order
        return pd.DataFrame({"np.tanh(std_delta_len)": np.tanh(frame["std_delta_len"].astype(float)),
                             "instruction_difficulty": frame["instruction_difficulty"].astype(float),
                             "not_gamed_baseline.astype(float)": frame["not_gamed_baseline"].astype(float)})

    # fit_LogisticRegressionCV(is_ytrue_proba=True): each row twice, label 1 weighted by p and label 0 by 1 - p.
    X = design(train)
    p = train["preference"].astype(float).reset_index(drop=True)
    X_dup = pd.concat([X, X], ignore_index=True)
    y_dup = np.concatenate([np.ones(len(X)), np.zeros(len(X))])
    true_prob = pd.concat([p, 1 - p], ignore_index=True)
    true_weight = np.concatenate([weight.to_numpy(), weight.to_numpy()])
    groups = np.concatenate([np.arange(len(X)), np.arange(len(X))])

    def logloss_continuous(y_true, y_pred, true_prob, true_sample_weight=None):
        target = np.where(y_true == 1, true_prob, 1 - true_prob)
        y_pred = np.clip(y_pred, 1e-15, 1 - 1e-15)
        losses = target * np.log(y_pred) + (1 - target) * np.log(1 - y_pred)
        if true_sample_weight is not None:
            losses = losses * true_sample_weight
        return -np.mean(losses)

    with sklearn.config_context(enable_metadata_routing=True):
        scorer = make_scorer(logloss_continuous, response_method="predict_proba", greater_is_better=False)
        scorer = scorer.set_score_request(true_sample_weight=True, true_prob=True)
        model = LogisticRegressionCV(cv=GroupKFold(n_splits=n_splits), scoring=scorer, random_state=123,
                                     dual=False, solver="liblinear", n_jobs=None, fit_intercept=False,
                                     **_l1_kwargs(sklearn.__version__))
        model.set_fit_request(sample_weight=True)
        model.fit(X_dup, y_dup, sample_weight=true_prob.to_numpy() * true_weight, groups=groups,
                  true_sample_weight=true_weight, true_prob=true_prob.to_numpy())
        predicted = model.predict_proba(design(df_test))[:, 1]
    return float(predicted.mean() * 100)


def _l1_kwargs(version: str) -> dict:
    """scikit-learn 1.8 replaced penalty="l1" with l1_ratios=(1.0,) in LogisticRegressionCV."""
    major, minor = (int(v) for v in version.split(".")[:2])
    return {"l1_ratios": (1.0,), "use_legacy_attributes": False} if (major, minor) >= (1, 8) else {"penalty": "l1"}


# ---- scoring ----------------------------------------------------------------------------------------------------

def annotate_row(judge: Judge, template: str, protocol: str, instruction: str, reference: str, output: str,
                 seed: int = DEFAULT_SEED, repeat: int = 0) -> tuple[float, str | None, bool]:
    """One head-to-head annotation. Returns (preference in the unswapped frame: 1 = reference, 2 = model,
    0 = identical outputs; NaN when unparsed), the judge's raw text (None when no call was needed), swapped."""
    if reference == output:
        return 0.0, None, False
    switched = is_switched(instruction, seed)
    row = {"instruction": instruction, "output_1": output if switched else reference,
           "output_2": reference if switched else output}
    messages = prompt_to_chatml(fill_template(template, row))
    settings = ORIGINAL_JUDGE[protocol]
    tag = f"{NAME}:{instruction[:40]}"
    if protocol == "weighted_alpaca_eval_gpt4_turbo":
        request = LogprobJudgeRequest(messages=messages, temperature=settings["temperature"],
                                      max_tokens=settings["max_tokens"], repeat=repeat, tag=tag,
                                      top_logprobs=settings["top_logprobs"])
        reply = judge.complete(request)
        preference = logprob_preference(reply_top_logprobs(reply))
    else:
        request = JudgeRequest(messages=messages, temperature=settings["temperature"],
                               max_tokens=settings["max_tokens"], repeat=repeat, tag=tag)
        reply = judge.complete(request)
        preference = ranking_preference(reply.text)
    if switched and not math.isnan(preference):
        preference = 3 - preference
    return preference, reply.text, switched


def score(items: Sequence[dict], answers: Mapping[str, str], *, protocol: str = DEFAULT_PROTOCOL, judge: Judge,
          n_runs: int = 1, annotator_prompt: str, seed: int = DEFAULT_SEED, length_controlled: bool = False,
          df_gamed=None, allow_missing: bool = False) -> dict:
    """Annotate every answered instruction against the reference and compute AlpacaEval's leaderboard numbers.

    Returns the common keys (headline "win_rate") plus standard_error, n_wins, n_wins_base, n_draws, n_total,
    discrete_win_rate, avg_length (characters of the model outputs), optionally length_controlled_winrate, and
    `annotations` in AlpacaEval's annotation shape (instruction, output_1 = reference, output_2 = model,
    preference, raw judge text, whether the pair was shown swapped).
    """
    check_protocol(NAME, protocol, PROTOCOLS)
    check_n_runs(n_runs)
    if length_controlled and df_gamed is None:
        raise ValueError("length_controlled=True needs df_gamed (load_df_gamed(data_dir) reads df_gamed.csv)")
    pairs, missing = match_answers(items, answers, NAME, allow_missing)
    per_run, summaries, annotations = [], [], []
    for run in range(n_runs):
        preferences = []
        for item, output in pairs:
            preference, raw, switched = annotate_row(judge, annotator_prompt, protocol, item["instruction"],
                                                     item["reference"], output, seed=seed, repeat=run)
            preferences.append(preference)
            annotations.append({"instruction": item["instruction"], "output_1": item["reference"],
                                "generator_1": item.get("reference_generator"), "output_2": output,
                                "annotator": protocol, "preference": preference, "raw_completion": raw,
                                "is_switched_outputs": switched, "run": run})
        summary = win_rate_summary(preferences)
        if length_controlled:
            summary["length_controlled_winrate"] = length_controlled_win_rate(
                preferences, [len(it["reference"]) for it, _ in pairs], [len(o) for _, o in pairs],
                [it["index"] for it, _ in pairs], df_gamed)
        summaries.append(summary)
        per_run.append(summary["win_rate"])
    failures = sum(1 for a in annotations if a["raw_completion"] is not None and math.isnan(a["preference"]))
    result = base_result(NAME, protocol, judge, ORIGINAL_JUDGE[protocol], n=len(pairs), n_parse_failures=failures,
                         n_runs=n_runs, per_run=per_run, headline="win_rate", n_missing=len(missing))
    if n_runs == 1:
        result.update(summaries[0])
    else:
        result["per_run_details"] = summaries
        result["win_rate"] = result["mean"]
    result["avg_length"] = sum(len(o) for _, o in pairs) / len(pairs)
    result["annotations"] = annotations
    return result


def score_annotations(annotations: Sequence[Mapping[str, Any]], df_gamed=None) -> dict:
    """AlpacaEval's numbers from an existing annotation file (no judge calls). With df_gamed, also the
    length-controlled win rate (rows are taken in file order as the eval-set positions)."""
    preferences = [math.nan if a["preference"] is None else float(a["preference"]) for a in annotations]
    result = win_rate_summary(preferences)
    result["avg_length"] = sum(len(a["output_2"]) for a in annotations) / len(annotations)
    if df_gamed is not None:
        result["length_controlled_winrate"] = length_controlled_win_rate(
            preferences, [len(a["output_1"]) for a in annotations], [len(a["output_2"]) for a in annotations],
            list(range(len(annotations))), df_gamed)
    return result


def score_file(answers_path: str | Path, data_dir: str | Path, protocol: str = DEFAULT_PROTOCOL,
               judge: Judge | None = None, **kw) -> dict:
    """Load the eval set and annotator prompt (and df_gamed.csv when length_controlled=True) from data_dir, read
    the model outputs, and score them."""
    require_judge(NAME, judge)
    verify_hash = kw.pop("verify_hash", True)
    items = load(data_dir, verify_hash=verify_hash, protocol=protocol)
    template = load_annotator_prompt(data_dir, protocol, verify_hash=verify_hash)
    if kw.get("length_controlled") and kw.get("df_gamed") is None:
        kw["df_gamed"] = load_df_gamed(data_dir)
    return score(items, read_answers(answers_path), protocol=protocol, judge=judge, annotator_prompt=template, **kw)

