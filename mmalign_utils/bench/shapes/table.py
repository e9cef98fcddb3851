"""The paper's Table 4 (alignment strategies on LLaVA-1.5-13B) and our numbers beside it.

    paper_table4()                              # the paper's numbers (paper-recipe.md section 6.1)
    render_table4(read_results(ctx.results_csv), "toy")

Which of our results fills which paper column (value as stored in results.csv, times the factor):

| paper column | our benchmark (split / metric) | factor | note |
|---|---|---|---|
| MM-Vet | shapes-mmvet (all / total) | 1 | 0-100, as the paper |
| LLaVA-Bench | shapes-llavabench (all / relative) | 1 | relative score, 0-100+ |
| POPE | shapes-pope (all / f1_mean) | 1 | mean F1 of 3 splits, 0-1 as the paper prints it |
| MMBench | shapes-mmbench (all / circular_acc) | 100 | CircularEval accuracy in %, as the paper |
| MT-Bench | text-mtbench (all / overall) | 1 | only with an LLM judge; textsuite prompts, not MT-Bench's |
| AlpacaEval | text-alpacaeval (all / win_rate) | 1 | only with an LLM judge and references |
| Text suite (ours only) | textsuite (heldout / prompt_strict_acc) | 100 | the offline text measure |

Rows: the paper's models map to ours through `models` ({row: model name in results.csv}); by default the
profile's base LLM and MLLM (config.PROFILES) and "<mllm>-rlhf", "<mllm>-sft", "<mllm>-steerlm", "<mllm>-rs",
"<mllm>-dpo" for the aligned ones. Several seeds of one model are averaged.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from mmalign_utils.config import get_profile

TABLE4_COLUMNS = ("MM-Vet", "LLaVA-Bench", "POPE", "MMBench", "MT-Bench", "AlpacaEval")
TABLE4_ROWS = ("base LLM", "MLLM", "RLHF", "SFT", "SteerLM", "rejection sampling", "DPO")
PAPER_MODELS = {"base LLM": "Vicuna-1.5-13B", "MLLM": "LLaVA-1.5-13B", "RLHF": "LLaVA-RLHF-13B",
                "SFT": "Standard SFT", "SteerLM": "SteerLM", "rejection sampling": "Rejection sampling", "DPO": "DPO"}
_NA = math.nan
_PAPER_VALUES = {  # paper-recipe.md section 6.1 (the paper's Table 4); "-" = not reported
    "base LLM": (_NA, _NA, _NA, _NA, 6.57, 81.4),
    "MLLM": (36.3, 73.1, 0.859, 67.4, 5.99, 79.3),
    "RLHF": (37.2, 76.8, 0.869, 60.1, 6.18, 81.0),
    "SFT": (36.5, 63.7, 0.850, 65.4, 5.01, 50.2),
    "SteerLM": (35.2, 67.0, 0.878, 65.1, 5.70, 68.8),
    "rejection sampling": (38.0, 70.6, 0.883, 67.6, 6.22, 74.9),
    "DPO": (41.2, 79.1, 0.870, 66.8, 6.73, 86.4),
}
# paper column -> (our benchmark, split, metric, factor)
COLUMN_SOURCES: dict[str, tuple[str, str, str, float]] = {
    "MM-Vet": ("shapes-mmvet", "all", "total", 1.0),
    "LLaVA-Bench": ("shapes-llavabench", "all", "relative", 1.0),
    "POPE": ("shapes-pope", "all", "f1_mean", 1.0),
    "MMBench": ("shapes-mmbench", "all", "circular_acc", 100.0),
    "MT-Bench": ("text-mtbench", "all", "overall", 1.0),
    "AlpacaEval": ("text-alpacaeval", "all", "win_rate", 1.0),
}
EXTRA_COLUMNS: dict[str, tuple[str, str, str, float]] = {
    "Text suite": ("textsuite", "heldout", "prompt_strict_acc", 100.0),
}
_ALIGNED_SUFFIX = {"RLHF": "rlhf", "SFT": "sft", "SteerLM": "steerlm", "rejection sampling": "rs", "DPO": "dpo"}


def paper_table4() -> pd.DataFrame:
    """The paper's Table 4: rows TABLE4_ROWS, columns TABLE4_COLUMNS, NaN where the paper has "-".
    `attrs["paper_models"]` names the paper's model of each row."""
    frame = pd.DataFrame.from_dict(_PAPER_VALUES, orient="index", columns=list(TABLE4_COLUMNS))
    frame.index.name = "row"
    frame.attrs["paper_models"] = dict(PAPER_MODELS)
    return frame


def default_models(profile: str) -> dict[str, str]:
    """{Table 4 row: our model name} by the naming convention in the module docstring."""
    spec = get_profile(profile)
    models = {"base LLM": spec.base_llm, "MLLM": spec.mllm}
    models.update({row: f"{spec.mllm}-{suffix}" for row, suffix in _ALIGNED_SUFFIX.items()})
    return models


def _our_value(results: pd.DataFrame, model: str | None, source: tuple[str, str, str, float]) -> float:
    if model is None:
        return math.nan
    benchmark, split, metric, factor = source
    rows = results[(results["model"] == model) & (results["benchmark"] == benchmark)
                   & (results["split"].astype(str) == split) & (results["metric"] == metric)]
    values = pd.to_numeric(rows["value"], errors="coerce").dropna()
    return float(values.mean()) * factor if len(values) else math.nan


def render_table4(results_df: pd.DataFrame, profile: str, models: Mapping[str, str | None] | None = None,
                  extra_columns: bool = True) -> pd.DataFrame:
    """Our numbers beside the paper's: rows TABLE4_ROWS, columns (paper column, "paper" | "ours"), plus
    ("Text suite", "ours") when `extra_columns`. `results_df` is results.csv as read by results.read_results;
    only rows of `profile` are used."""
    missing = {"model", "benchmark", "split", "metric", "value", "profile"} - set(results_df.columns)
    if missing:
        raise ValueError(f"results table lacks columns {sorted(missing)}; pass results.read_results(results.csv)")
    mine = results_df[results_df["profile"] == profile]
    chosen = {**default_models(profile), **(models or {})}
    paper = paper_table4()
    columns: dict[tuple[str, str], list[float]] = {}
    for column in TABLE4_COLUMNS:
        columns[(column, "paper")] = list(paper[column])
        columns[(column, "ours")] = [_our_value(mine, chosen.get(row), COLUMN_SOURCES[column]) for row in TABLE4_ROWS]
    if extra_columns:
        for column, source in EXTRA_COLUMNS.items():
            columns[(column, "ours")] = [_our_value(mine, chosen.get(row), source) for row in TABLE4_ROWS]
    table = pd.DataFrame(columns, index=pd.Index(TABLE4_ROWS, name="row"))
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["benchmark", "source"])
    table.attrs["models"] = {row: chosen.get(row) for row in TABLE4_ROWS}
    table.attrs["profile"] = profile
    return table
