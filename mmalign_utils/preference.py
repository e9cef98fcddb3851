"""From annotated self-samples to the four training datasets of the paper (§3.4-§3.5, §4.4).

Input: a list of `AnnotatedPrompt` (one image-question prompt, its k sampled answers and the judge's five
HelpSteer scores for each). Output: `datasets.Dataset`s in TRL's conversational vision format:

- `build_dpo_pairs`: preference pairs (the paper's exact rule by default, other pairing strategies by name);
- `build_rejection_sampling`: the best of the k answers per prompt;
- `build_steerlm`: all k answers, each conditioned on its own attributes written into the user turn;
- `build_sft`: the source data's reference answers, or the judge-written answers.

Ablations (`subset_by_image`, `flip_labels`), the pair-signal diagnostics and dataset cards are here too.
Every builder records what it did (builder, strategy, seed, ...) as JSON in `ds.info.description`, which
`provenance()` reads back and `dataset_card()` prints; it survives `save_to_disk`.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from datasets import Dataset, Features, Value

from mmalign_utils.formats import (
    DPO_FEATURES, HELPSTEER_ATTRIBUTES, IMAGE_TOKEN, MESSAGES_FEATURE, ROW_ID_FEATURES, completion, message_text,
    rows_to_dataset, score_features, sft_messages, vision_prompt,
)

ATTRIBUTES = HELPSTEER_ATTRIBUTES
QUALITY_ATTRIBUTES = ("helpfulness", "correctness", "coherence")  # the paper's DPO quality ignores the other two
ALL_FOURS: dict[str, int] = {attribute: 4 for attribute in ATTRIBUTES}  # SteerLM's inference-time condition

Scores = Mapping[str, int]


# --------------------------------------------------------------------------------------------------------------
# The input contract.

@dataclass
class AnnotatedPrompt:
    """One prompt with its k sampled answers and the judge's scores, as the annotation step produces it.

    `image` is a PIL image or a file path; `question` has no "<image>" text (the image becomes a content part);
    `scores[i]` holds integer 0-4 values for the five HelpSteer attributes of `answers[i]` (extra keys, such as
    the judge's reasoning, are allowed and ignored); `image_id` groups prompts that share an image (defaults to the
    path, or to a hash of the pixels for an in-memory image).
    """

    prompt_id: str
    image: Any
    question: str
    answers: list[str]
    scores: list[dict[str, int]]
    reference_answer: str | None = None
    judge_answer: str | None = None
    source: str = ""
    image_id: str = ""

    def __post_init__(self) -> None:
        where = f"AnnotatedPrompt {self.prompt_id!r}"
        if not isinstance(self.prompt_id, str) or not self.prompt_id:
            raise ValueError(f"{where}: prompt_id must be a non-empty string")
        if IMAGE_TOKEN in self.question:
            raise ValueError(f"{where}: the question contains {IMAGE_TOKEN!r}; pass the question text only (the "
                             f"image becomes an image content part)")
        if not self.answers or not all(isinstance(a, str) for a in self.answers):
            raise ValueError(f"{where}: answers must be a non-empty list of strings")
        if len(self.scores) != len(self.answers):
            raise ValueError(f"{where}: {len(self.answers)} answers but {len(self.scores)} score dicts")
        for i, scores in enumerate(self.scores):
            check_scores(scores, f"{where}, answer {i}")
        if not self.image_id:
            self.image_id = default_image_id(self.image)


def check_scores(scores: Any, where: str = "scores") -> None:
    """Raise ValueError unless `scores` maps each of the five attributes to an integer 0-4."""
    if not isinstance(scores, Mapping):
        raise ValueError(f"{where}: expected a dict of attribute scores, got {type(scores).__name__}")
    missing = [a for a in ATTRIBUTES if a not in scores]
    if missing:
        raise ValueError(f"{where}: scores lack {missing} (has {sorted(scores)})")
    for attribute in ATTRIBUTES:
        value = scores[attribute]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 4:
            raise ValueError(f"{where}: {attribute} must be an integer 0-4, got {value!r}")


def default_image_id(image: Any) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    if hasattr(image, "tobytes"):
        digest = hashlib.sha256(repr((image.mode, image.size)).encode() + image.tobytes()).hexdigest()
        return f"sha256:{digest[:16]}"
    raise TypeError(f"image must be a PIL image or a file path, got {type(image).__name__}")


def quality(scores: Scores) -> int:
    """The paper's DPO quality: helpfulness + correctness + coherence (0-12); complexity and verbosity are ignored."""
    return sum(int(scores[attribute]) for attribute in QUALITY_ATTRIBUTES)


def first_argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the first one on a tie (the paper's tie rule)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def first_argmin(values: Sequence[float]) -> int:
    return min(range(len(values)), key=lambda i: (values[i], i))


# --------------------------------------------------------------------------------------------------------------
# Shared row pieces.

class _ImageEncoder:
    """Turns a prompt's image into a value for the `images` column, encoding each in-memory image once.

    A path is checked and kept as a path (datasets reads the file lazily and embeds it on save_to_disk). An
    in-memory image becomes PNG bytes at a low compression level: lossless, and several times faster than the
    default, which matters when SteerLM repeats each image k times or the pool has thousands of images.
    """

    def __init__(self) -> None:
        self._cache: dict[int, tuple[Any, Any]] = {}  # id(image) -> (image kept alive, encoded value)

    def __call__(self, prompt: AnnotatedPrompt) -> Any:
        image = prompt.image
        if isinstance(image, (str, os.PathLike)):
            path = Path(image).expanduser().resolve()
            if not path.is_file():
                raise FileNotFoundError(f"prompt {prompt.prompt_id!r}: image file {path} does not exist")
            return str(path)
        hit = self._cache.get(id(image))
        if hit is not None and hit[0] is image:
            return hit[1]
        try:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", compress_level=1)
            value: Any = {"bytes": buffer.getvalue(), "path": None}
        except (OSError, ValueError):  # a mode PNG cannot hold: let datasets convert it
            value = image
        self._cache[id(image)] = (image, value)
        return value


def _base_row(prompt: AnnotatedPrompt, encode: _ImageEncoder) -> dict:
    return {
        "prompt_id": prompt.prompt_id,
        "image_id": prompt.image_id,
        "source": prompt.source,
        "question": prompt.question,
        "images": [encode(prompt)],
    }


def _score_columns(scores: Scores, prefix: str = "") -> dict[str, int]:
    cols = {f"{prefix}{attribute}": int(scores[attribute]) for attribute in ATTRIBUTES}
    cols[f"{prefix}quality"] = quality(scores)
    return cols


def _check_unique_ids(prompts: Sequence[AnnotatedPrompt]) -> None:
    seen: set[str] = set()
    for prompt in prompts:
        if not isinstance(prompt, AnnotatedPrompt):
            raise TypeError(f"expected AnnotatedPrompt objects, got {type(prompt).__name__}")
        if prompt.prompt_id in seen:
            raise ValueError(f"prompt_id {prompt.prompt_id!r} appears twice; prompt ids must be unique")
        seen.add(prompt.prompt_id)


def provenance(ds: Dataset) -> list[dict]:
    """The build steps recorded in `ds.info.description` (empty if the dataset was not made here)."""
    try:
        record = json.loads(ds.info.description or "")
    except json.JSONDecodeError:
        return []
    return list(record.get("mmalign_provenance", [])) if isinstance(record, dict) else []


def _with_step(ds: Dataset, step: dict, previous: Sequence[dict] = ()) -> Dataset:
    ds.info.description = json.dumps({"mmalign_provenance": [*previous, step]}, sort_keys=True)
    return ds


# --------------------------------------------------------------------------------------------------------------
# DPO pairs.

PAIRINGS = ("paper", "all_pairs", "best_vs_worst")
ScoreSpec = str | Callable[[Scores], float]


def _ranking(score: ScoreSpec) -> tuple[str, Callable[[Scores], float]]:
    if callable(score):
        return getattr(score, "__name__", "custom"), score
    if score == "quality":
        return "quality", quality
    if score in ATTRIBUTES:
        return score, lambda scores: scores[score]
    raise ValueError(f"unknown score {score!r}: use 'quality', one of {list(ATTRIBUTES)}, or a function of the scores")


def _pairs_for_prompt(
    values: Sequence[float], pairing: str, min_gap: float, rng: random.Random
) -> list[tuple[int, int]]:
    if pairing == "all_pairs":
        return [(i, j) for i in range(len(values)) for j in range(len(values)) if values[i] - values[j] >= min_gap]
    best = first_argmax(values)
    if pairing == "best_vs_worst":
        worst = first_argmin(values)
        return [(best, worst)] if values[best] - values[worst] >= min_gap else []
    # The paper's rule: a prompt whose spread is below min_gap has no answer min_gap below the best, so it is
    # dropped; otherwise one rejected answer is drawn uniformly from those at least min_gap below the best.
    candidates = [j for j in range(len(values)) if values[j] <= values[best] - min_gap]
    return [(best, rng.choice(candidates))] if candidates else []


def build_dpo_pairs(
    prompts: Sequence[AnnotatedPrompt],
    strategy: str = "paper",
    min_gap: float = 2,
    seed: int = 0,
    score: ScoreSpec | None = None,
) -> Dataset:
    """Preference pairs from annotated prompts.

    strategy:
      - "paper" (default, paper §3.4): rank by quality = helpfulness + correctness + coherence; keep prompts whose
        max - min >= min_gap; chosen = the best answer (first arg-max on ties); rejected = one answer drawn at
        random among those with rank <= chosen - min_gap; one pair per prompt.
      - an attribute name ("helpfulness", "correctness", "coherence", "complexity", "verbosity"): the paper's rule
        ranking by that one attribute (0-4) instead of the sum.
      - "all_pairs": every ordered pair (i, j) of answers of a prompt with rank_i - rank_j >= min_gap.
      - "best_vs_worst": first arg-max against first arg-min, when their gap >= min_gap (no randomness).
    score: override the ranking of "paper" / "all_pairs" / "best_vs_worst" with "quality", an attribute name or
    a function of a score dict (e.g. a weighted sum).

    The random draw for a prompt is seeded by (seed, prompt_id), so it does not depend on the order of the prompts
    or on which other prompts are present. Columns: prompt_id, image_id, source, question, images, prompt, chosen,
    rejected, chosen_index / rejected_index (positions in `answers`), chosen_<attribute> / rejected_<attribute>
    for the five attributes, chosen_quality / rejected_quality, and margin = chosen rank - rejected rank.
    """
    if min_gap <= 0:
        raise ValueError(f"min_gap must be > 0 (got {min_gap}); with 0 an answer could be paired with itself")
    if strategy in ATTRIBUTES:
        if score is not None:
            raise ValueError(f"strategy {strategy!r} already ranks by {strategy}; do not pass score as well")
        pairing, score = "paper", strategy
    elif strategy in PAIRINGS:
        pairing, score = strategy, score if score is not None else "quality"
    else:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {list(PAIRINGS) + list(ATTRIBUTES)}")
    score_name, rank = _ranking(score)
    _check_unique_ids(prompts)
    encode = _ImageEncoder()
    rows = []
    for prompt in prompts:
        values = [float(rank(s)) for s in prompt.scores]
        rng = random.Random(f"{seed}:{prompt.prompt_id}")
        pairs = _pairs_for_prompt(values, pairing, min_gap, rng)
        for chosen, rejected in pairs:
            rows.append({
                **_base_row(prompt, encode),
                "prompt": vision_prompt(prompt.question),
                "chosen": completion(prompt.answers[chosen]),
                "rejected": completion(prompt.answers[rejected]),
                "chosen_index": chosen,
                "rejected_index": rejected,
                **_score_columns(prompt.scores[chosen], "chosen_"),
                **_score_columns(prompt.scores[rejected], "rejected_"),
                "margin": values[chosen] - values[rejected],
            })
    ds = rows_to_dataset(rows, DPO_FEATURES)
    return _with_step(ds, {"step": "build_dpo_pairs", "strategy": strategy, "pairing": pairing, "score": score_name,
                           "min_gap": min_gap, "seed": seed, "prompts_in": len(prompts),
                           "prompts_kept": len(set(ds["prompt_id"])), "rows": len(ds)})


# --------------------------------------------------------------------------------------------------------------
# SFT-style datasets.

SFT_ANSWER_FEATURES = Features({
    **ROW_ID_FEATURES,
    "messages": MESSAGES_FEATURE,
    "answer_index": Value("int32"),
    **score_features(""),
})


def build_rejection_sampling(prompts: Sequence[AnnotatedPrompt], min_quality: int | None = None) -> Dataset:
    """The best of the k answers per prompt, ranked by the same quality as the DPO pairs (first arg-max on ties).

    `min_quality` drops prompts whose best answer scores lower (12 reproduces the paper's early "perfect score"
    variant). Columns: prompt_id, image_id, source, question, images, messages, answer_index, the five attributes
    and quality of the kept answer.
    """
    _check_unique_ids(prompts)
    encode = _ImageEncoder()
    rows = []
    for prompt in prompts:
        best = first_argmax([quality(s) for s in prompt.scores])
        if min_quality is not None and quality(prompt.scores[best]) < min_quality:
            continue
        rows.append({**_base_row(prompt, encode), "messages": sft_messages(prompt.question, prompt.answers[best]),
                     "answer_index": best, **_score_columns(prompt.scores[best])})
    ds = rows_to_dataset(rows, SFT_ANSWER_FEATURES)
    return _with_step(ds, {"step": "build_rejection_sampling", "score": "quality", "min_quality": min_quality,
                           "prompts_in": len(prompts), "rows": len(ds)})


def steerlm_attribute_string(scores: Scores) -> str:
    """`helpfulness:h,correctness:c,coherence:k,complexity:x,verbosity:v` (HelpSteer order, no spaces).

    Used both for training (each answer's own scores) and at inference (`ALL_FOURS`), so the two match exactly.
    """
    check_scores(scores, "SteerLM attributes")
    return ",".join(f"{attribute}:{int(scores[attribute])}" for attribute in ATTRIBUTES)


def steerlm_question(question: str, scores: Scores) -> str:
    """The SteerLM user text: the question, a newline, then the attribute string (the paper's suffix position)."""
    return f"{question}\n{steerlm_attribute_string(scores)}"


STEERLM_FEATURES = Features({**SFT_ANSWER_FEATURES, "attributes": Value("string")})


def build_steerlm(prompts: Sequence[AnnotatedPrompt]) -> Dataset:
    """All k answers of every prompt, each with its own attributes appended to the question in the user turn.

    The user text is `steerlm_question(question, scores)`; the `question` column keeps the bare question and
    `attributes` the appended string. At inference render `steerlm_question(question, ALL_FOURS)`.
    """
    _check_unique_ids(prompts)
    encode = _ImageEncoder()
    rows = []
    for prompt in prompts:
        for i, (answer, scores) in enumerate(zip(prompt.answers, prompt.scores)):
            rows.append({**_base_row(prompt, encode),
                         "messages": sft_messages(steerlm_question(prompt.question, scores), answer),
                         "answer_index": i, **_score_columns(scores),
                         "attributes": steerlm_attribute_string(scores)})
    ds = rows_to_dataset(rows, STEERLM_FEATURES)
    return _with_step(ds, {"step": "build_steerlm", "attribute_format": "question\\nhelpfulness:h,...,verbosity:v",
                           "prompts_in": len(prompts), "rows": len(ds)})


SFT_FEATURES = Features({**ROW_ID_FEATURES, "messages": MESSAGES_FEATURE, "answer_source": Value("string")})


def build_sft(
    prompts: Sequence[AnnotatedPrompt],
    source: Literal["reference", "judge"] = "reference",
    on_missing: Literal["skip", "error"] = "skip",
) -> Dataset:
    """One gold answer per prompt: the source data's `reference_answer`, or the judge-written `judge_answer`.

    Prompts without that answer are skipped with a warning that names them (`on_missing="error"` raises instead).
    """
    if source not in ("reference", "judge"):
        raise ValueError(f"source must be 'reference' or 'judge', got {source!r}")
    if on_missing not in ("skip", "error"):
        raise ValueError(f"on_missing must be 'skip' or 'error', got {on_missing!r}")
    _check_unique_ids(prompts)
    encode = _ImageEncoder()
    rows, missing = [], []
    for prompt in prompts:
        answer = prompt.reference_answer if source == "reference" else prompt.judge_answer
        if answer is None or not answer.strip():
            missing.append(prompt.prompt_id)
            continue
        rows.append({**_base_row(prompt, encode), "messages": sft_messages(prompt.question, answer),
                     "answer_source": source})
    if missing:
        message = (f"{len(missing)} of {len(prompts)} prompts have no {source} answer "
                   f"(first: {missing[:5]})")
        if on_missing == "error":
            raise ValueError(message)
        warnings.warn(message + "; they are left out of the SFT set", stacklevel=2)
    ds = rows_to_dataset(rows, SFT_FEATURES)
    return _with_step(ds, {"step": "build_sft", "answer_source": source, "prompts_in": len(prompts),
                           "prompts_without_answer": len(missing), "rows": len(ds)})


# --------------------------------------------------------------------------------------------------------------
# Ablations.

T = TypeVar("T", Dataset, list)


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def image_order(image_ids: Sequence[str], seed: int) -> list[str]:
    """The distinct image ids in a seeded pseudo-random order that depends only on (seed, id).

    Taking a prefix of this order gives nested subsets (25% inside 50% inside 75%), and the same image keeps its
    rank whichever dataset built from the same pool it appears in.
    """
    unique = sorted(set(image_ids))
    return sorted(unique, key=lambda image_id: hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest())


def subset_by_image(ds_or_prompts: T, fraction: float, seed: int = 0) -> T:
    """Keep the rows (or AnnotatedPrompts) of round(fraction x number of distinct images) images.

    Drawn by image (paper: `datascaling_images-{25,50,75}%`) so all rows of an image stay together. With the same
    seed, the 25% subset is inside the 50% subset, which is inside the 75% one. Row order is preserved.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if isinstance(ds_or_prompts, Dataset):
        image_ids = list(ds_or_prompts["image_id"])
    else:
        image_ids = [p.image_id for p in ds_or_prompts]
    order = image_order(image_ids, seed)
    keep = set(order[:_round_half_up(fraction * len(order))])
    indices = [i for i, image_id in enumerate(image_ids) if image_id in keep]
    if isinstance(ds_or_prompts, Dataset):
        previous = provenance(ds_or_prompts)
        subset = ds_or_prompts.select(indices)
        return _with_step(subset, {"step": "subset_by_image", "fraction": fraction, "seed": seed,
                                   "images_kept": len(keep), "images_in": len(order), "rows": len(subset)}, previous)
    return [ds_or_prompts[i] for i in indices]


def _paired_columns(columns: Sequence[str]) -> list[tuple[str, str]]:
    """(chosen column, rejected column) pairs: chosen/rejected, chosen_quality/rejected_quality, ref_* log-probs."""
    return [(c, c.replace("chosen", "rejected")) for c in columns
            if "chosen" in c and c.replace("chosen", "rejected") in columns]


def flip_labels(dpo_ds: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """Swap chosen and rejected in exactly round(fraction x rows) pairs (paper Table 5 label-noise ablation).

    Every chosen_* column is swapped with its rejected_* partner (texts, indices, scores, reference log-probs),
    so each column still describes the answer in its slot, and `margin` changes sign. A `flipped` column records
    which rows were swapped. The rows to flip are a prefix of a seeded permutation, so with the same seed the 25%
    flipped rows are among the 50% ones.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if "flipped" in dpo_ds.column_names:
        raise ValueError("this dataset already has a 'flipped' column; flip the unflipped dataset instead")
    pairs = _paired_columns(dpo_ds.column_names)
    if ("chosen", "rejected") not in pairs:
        raise ValueError(f"not a preference dataset: needs 'chosen' and 'rejected' (has {dpo_ds.column_names})")
    n = len(dpo_ds)
    permutation = list(range(n))
    random.Random(seed).shuffle(permutation)
    to_flip = set(permutation[:_round_half_up(fraction * n)])
    input_columns = [c for pair in pairs for c in pair] + (["margin"] if "margin" in dpo_ds.column_names else [])

    def swap(*args: Any) -> dict:
        *columns, indices = args
        batch = dict(zip(input_columns, columns))
        flags = [index in to_flip for index in indices]
        out: dict[str, list] = {"flipped": flags}
        for chosen_col, rejected_col in pairs:
            out[chosen_col] = [r if f else c for c, r, f in zip(batch[chosen_col], batch[rejected_col], flags)]
            out[rejected_col] = [c if f else r for c, r, f in zip(batch[chosen_col], batch[rejected_col], flags)]
        if "margin" in batch:
            out["margin"] = [(-m if f and m is not None else m) for m, f in zip(batch["margin"], flags)]
        return out

    previous = provenance(dpo_ds)
    flipped = dpo_ds.map(swap, batched=True, with_indices=True, input_columns=input_columns,
                         features=Features({**dpo_ds.features, "flipped": Value("bool")}))
    return _with_step(flipped, {"step": "flip_labels", "fraction": fraction, "seed": seed,
                                "rows_flipped": len(to_flip), "rows": n}, previous)


# --------------------------------------------------------------------------------------------------------------
# Diagnostics.

def word_count(text: str) -> int:
    return len(text.split())


def _mean(values: Sequence[float | None]) -> float:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else math.nan


def within_prompt_correlation(groups: Sequence[tuple[Sequence[float], Sequence[float]]]) -> float:
    """Pearson correlation of x and y after subtracting each group's own means (pooled over groups)."""
    sxy = sxx = syy = 0.0
    for xs, ys in groups:
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        for x, y in zip(xs, ys):
            sxy += (x - mx) * (y - my)
            sxx += (x - mx) ** 2
            syy += (y - my) ** 2
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def pair_signal_report(prompts: Sequence[AnnotatedPrompt] | None, dpo_ds: Dataset) -> dict:
    """What signal the pairs carry: the numbers the paper issue requires reported next to any DPO result.

    Prompt side (NaN without prompts): n_prompts; quality_spread_mean = mean over prompts of max - min quality;
    quality_spread_mean_kept (over prompts that have a pair); share_prompts_kept; and
    quality_length_corr_within_prompt (Pearson of quality and answer words after centring each prompt, so a
    judge that simply rewards length shows up). Pair side: n_pairs, n_flipped, and for `chosen` and `rejected`
    the mean of each attribute, of quality and of length in words; share_chosen_longer.
    """
    pair_ids = set(dpo_ds["prompt_id"]) if "prompt_id" in dpo_ds.column_names else set()
    report: dict[str, Any] = {}
    if prompts:
        spreads = {p.prompt_id: max(quality(s) for s in p.scores) - min(quality(s) for s in p.scores) for p in prompts}
        kept = [pid for pid in spreads if pid in pair_ids]
        report.update({
            "n_prompts": len(prompts),
            "n_prompts_kept": len(kept),
            "share_prompts_kept": len(kept) / len(prompts),
            "quality_spread_mean": _mean(list(spreads.values())),
            "quality_spread_mean_kept": _mean([spreads[pid] for pid in kept]),
            "quality_length_corr_within_prompt": within_prompt_correlation(
                [([quality(s) for s in p.scores], [word_count(a) for a in p.answers]) for p in prompts]),
        })
    else:
        report.update({key: math.nan for key in ("n_prompts", "n_prompts_kept", "share_prompts_kept",
                                                 "quality_spread_mean", "quality_spread_mean_kept",
                                                 "quality_length_corr_within_prompt")})
    chosen_words = [word_count(message_text(c[-1])) for c in dpo_ds["chosen"]]
    rejected_words = [word_count(message_text(r[-1])) for r in dpo_ds["rejected"]]
    report["n_pairs"] = len(dpo_ds)
    report["n_flipped"] = int(sum(dpo_ds["flipped"])) if "flipped" in dpo_ds.column_names else 0
    for side, words in (("chosen", chosen_words), ("rejected", rejected_words)):
        stats = {}
        for name in (*ATTRIBUTES, "quality"):
            column = f"{side}_{name}"
            stats[name] = _mean(list(dpo_ds[column])) if column in dpo_ds.column_names else math.nan
        stats["length_words"] = _mean(words)
        report[side] = stats
    report["share_chosen_longer"] = (sum(c > r for c, r in zip(chosen_words, rejected_words)) / len(dpo_ds)
                                     if len(dpo_ds) else math.nan)
    return report


# --------------------------------------------------------------------------------------------------------------
# Dataset cards.

KINDS = ("dpo", "rejection_sampling", "steerlm", "sft")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _feature_name(feature: Any) -> str:
    if feature == MESSAGES_FEATURE:
        return "conversation (list of {role, content: [{type, text}]})"
    if isinstance(feature, Value):
        return feature.dtype
    return "list of images" if "Image" in repr(feature) else repr(feature)


def _answer_words(ds: Dataset) -> list[int]:
    if "messages" in ds.column_names:
        return [word_count(message_text(m[-1])) for m in ds["messages"]]
    return []


def dataset_card(
    ds: Dataset,
    *,
    kind: str,
    judge_model: str,
    prompt_hash: str,
    filters: Mapping[str, Any] | None = None,
    seed: int | None = None,
    counts: Mapping[str, int] | None = None,
    title: str | None = None,
    description: str = "",
    license: str = "other",
) -> str:
    """A markdown dataset card: what the data is, how it was made (judge, prompt hash, filters, seed, build steps),
    how many rows came from each source, and the score and length summary of the answers."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    lines = ["---", f"license: {license}", "tags:", "- mmalign", f"- {kind}", "---", "",
             f"# {title or f'mmalign {kind} dataset'}", ""]
    if description:
        lines += [description, ""]
    lines += ["| field | value |", "|---|---|", f"| kind | {kind} |", f"| rows | {len(ds)} |",
              f"| judge model | {judge_model} |", f"| judge prompt sha256 | {prompt_hash} |",
              f"| seed | {seed if seed is not None else 'not given'} |", ""]
    lines += ["## Format", "",
              "TRL conversational vision format: `images` is a list with one image; " +
              ("`prompt` is the user turn (image part + question), `chosen` / `rejected` the assistant answers."
               if kind == "dpo" else "`messages` is the user turn (image part + question) and the assistant answer."),
              ""]
    if filters:
        lines += ["## Filters", ""] + [f"- {key}: {_fmt(value)}" for key, value in filters.items()] + [""]
    if counts:
        lines += ["## Counts", ""] + [f"- {key}: {_fmt(value)}" for key, value in counts.items()] + [""]
    steps = provenance(ds)
    if steps:
        lines += ["## Build steps", ""]
        for i, step in enumerate(steps, 1):
            details = ", ".join(f"{k}={_fmt(v)}" for k, v in step.items() if k != "step")
            lines.append(f"{i}. `{step.get('step', '?')}`: {details}")
        lines.append("")
    if "source" in ds.column_names and len(ds):
        by_source: dict[str, int] = {}
        for source in ds["source"]:
            by_source[source or "(none)"] = by_source.get(source or "(none)", 0) + 1
        lines += ["## Rows by source", "", "| source | rows |", "|---|---|"]
        lines += [f"| {source} | {n} |" for source, n in sorted(by_source.items())] + [""]
    if kind == "dpo" and len(ds):
        report = pair_signal_report(None, ds)
        names = (*ATTRIBUTES, "quality", "length_words")
        lines += ["## Chosen vs rejected (means)", "", "| | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for side in ("chosen", "rejected"):
            lines.append(f"| {side} | " + " | ".join(_fmt(report[side][n]) for n in names) + " |")
        lines += ["", f"Share of pairs whose chosen answer is longer: {_fmt(report['share_chosen_longer'])}."]
        if "margin" in ds.column_names:
            lines.append(f"Mean margin: {_fmt(_mean(list(ds['margin'])))}.")
        if "flipped" in ds.column_names:
            lines.append(f"Flipped pairs (label-noise ablation): {report['n_flipped']} of {len(ds)}.")
        lines.append("")
    elif len(ds):
        words = _answer_words(ds)
        summary = [f"- mean answer length: {_fmt(_mean(words))} words"] if words else []
        if "quality" in ds.column_names:
            mean_quality = _fmt(_mean(list(ds["quality"])))
            summary.append(f"- mean quality (helpfulness + correctness + coherence): {mean_quality}")
        if summary:
            lines += ["## Answers", ""] + summary + [""]
    lines += ["## Columns", ""] + [f"- `{name}`: {_feature_name(feature)}" for name, feature in ds.features.items()]
    lines.append("")
    return "\n".join(lines)


def save_dataset(ds: Dataset, path: str | Path, card: str) -> Path:
    """Write the dataset with `save_to_disk` (images embedded) and its card as README.md in the same folder."""
    path = Path(path)
    ds.save_to_disk(str(path))
    (path / "README.md").write_text(card, encoding="utf-8")
    return path


__all__ = [
    "ALL_FOURS", "ATTRIBUTES", "AnnotatedPrompt", "KINDS", "PAIRINGS", "QUALITY_ATTRIBUTES", "build_dpo_pairs",
    "build_rejection_sampling", "build_sft", "build_steerlm", "check_scores", "dataset_card", "default_image_id",
    "first_argmax", "first_argmin", "flip_labels", "image_order", "pair_signal_report", "provenance", "quality",
    "save_dataset", "steerlm_attribute_string", "steerlm_question", "subset_by_image", "within_prompt_correlation",
    "word_count",
]
