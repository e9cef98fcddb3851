"""Notebook 07's analysis: every results.csv of a run, seeds pooled, set beside the paper's numbers.

    raw = collect_results("artifacts")              # every results.csv below the folder (sweeps too), deduplicated
    agg = aggregate_seeds(raw)                      # one row per measurement: mean over seeds and a 95% CI
    table4(agg, "toy")                              # the paper's Table 4 layout, paper and ours side by side
    plot_benchmark_bars(agg, "toy")                 # headline metric per benchmark and model, 95% CIs
    plot_ablation(agg, "toy", "data")               # data scaling (models "<dpo>@data=0.5"), paper's curve beside
    plot_ablation(agg, "toy", "flip")               # label noise (models "<dpo>@flip=0.25"), paper's Table 5 beside
    per_prompt = load_text_per_prompt("artifacts", "toy")
    length_summary(per_prompt); length_controlled_scores(per_prompt, "smollm2-135m-instruct")
    annotation_pair_correlations(find_annotation_stores("artifacts")[0])   # Figure 3, from notebook 02's store
    claims_check(agg, "toy")                        # the paper's claims: holds / does not hold / inconclusive /
                                                    # not measured, with the numbers and CIs

Every function accepts missing rows: what is absent is reported as "not measured", never guessed. The methods
(seed CIs, verdict rules, length control) are written down in docs/report.md.
"""
from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmalign_utils.helpsteer import ATTRIBUTES
from mmalign_utils.results import RESULT_COLUMNS

MEASUREMENT_KEY = ("profile", "model", "benchmark", "split", "metric", "protocol", "judge")
_TEXT_COLUMNS = ("notebook", "model", "benchmark", "split", "metric", "profile", "protocol", "judge")
_NUMBER_COLUMNS = ("value", "n", "ci_low", "ci_high", "seed")
ROLES = ("base LLM", "MLLM", "SFT", "SteerLM", "rejection sampling", "DPO")  # Table 4's rows that we train
HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_MEASURED = "holds", "does not hold", "inconclusive", "not measured"


# ------------------------------------------------------------------------------------------------------------
# Collecting and pooling


def collect_results(artifacts_dir: str | Path) -> pd.DataFrame:
    """Every results.csv below `artifacts_dir` (the run's own, each sweep folder's, at any depth; hidden folders
    skipped) as one table with a `source` column (the file's path relative to `artifacts_dir`). Rows identical in
    every results column are kept once, from the shallowest file (the run's own before a sweep's copy)."""
    root = Path(artifacts_dir)
    files = [p for p in root.rglob("results.csv") if not _hidden(p, root)]
    files.sort(key=lambda p: (len(p.relative_to(root).parts), str(p)))
    frames = [_read_one(path, path.relative_to(root).as_posix()) for path in files]
    if not frames:
        return pd.DataFrame(columns=[*RESULT_COLUMNS, "source"])
    table = pd.concat(frames, ignore_index=True)
    return table.drop_duplicates(subset=list(RESULT_COLUMNS), keep="first").reset_index(drop=True)


def _hidden(path: Path, root: Path) -> bool:
    """Below a hidden folder (.ipynb_checkpoints, .git): never a run's output."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _read_one(path: Path, source: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)  # every cell as written; numbers below
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable results CSV ({error}); fix or delete the file") from None
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: lacks the results columns {missing}; a results.csv must have the header "
                         f"{','.join(RESULT_COLUMNS)} (written by results.append_results)")
    frame = frame[list(RESULT_COLUMNS)].copy()
    written = frame["value"].str.strip().str.lower()
    for column in _NUMBER_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    # "nan" is a measurement (an undefined metric, e.g. F1 with no positive answer); an empty or unreadable value
    # is a broken row
    bad = frame.index[frame["value"].isna() & (written != "nan")]
    if len(bad):
        raise ValueError(f"{path}: row {int(bad[0]) + 2} has no numeric value ({frame.loc[bad[0], 'model']}, "
                         f"{frame.loc[bad[0], 'benchmark']}, {frame.loc[bad[0], 'metric']}); fix or delete that line")
    frame["source"] = source
    return frame


def aggregate_seeds(df: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per measurement (profile, model, benchmark, split, metric, protocol, judge).

    Within one results.csv, a seed's last row counts: a notebook run twice counts once, and a rerun on rebuilt data
    or a retrained model replaces the earlier run's numbers instead of being averaged with them. Rows of one seed
    from different files (sweep folders) are averaged as repeats, with a warning when they differ. With k >= 2
    seeds the value is the mean over seeds and the CI is Student's t interval across seeds,
    mean +- t(0.975, k-1) * sd / sqrt(k) (`ci_kind` "seeds"); with one seed the run's own bootstrap CI over items is
    kept (`ci_kind` "bootstrap", or "none" when the row has none). Extra columns: n_seeds, seeds, sd (across
    seeds), notebooks, sources."""
    from scipy import stats

    columns = [*MEASUREMENT_KEY, "value", "ci_low", "ci_high", "n", "n_seeds", "seeds", "sd", "ci_kind", "notebooks",
               "sources"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    frame = df.copy()
    if "source" not in frame:
        frame["source"] = ""
    for column in (*MEASUREMENT_KEY, "notebook", "source"):
        frame[column] = frame[column].fillna("").astype(str)
    for column in _NUMBER_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["seed"] = frame["seed"].fillna(-1).astype(int)
    key = list(MEASUREMENT_KEY)
    frame = frame.drop_duplicates([*key, "seed", "source"], keep="last")  # the file's latest run of each seed
    per_seed = frame.groupby([*key, "seed"], sort=False).agg(
        value=("value", "mean"), ci_low=("ci_low", "mean"), ci_high=("ci_high", "mean"), n=("n", "mean"),
        values=("value", "nunique"), files=("source", "nunique")).reset_index().sort_values("seed", kind="stable")
    clashes = per_seed[(per_seed["values"] > 1) & (per_seed["files"] > 1)]
    if len(clashes):
        # Usually a sweep over a parameter that is not in the model name: its runs are pooled as repeats.
        first = clashes.iloc[0]
        warnings.warn(f"{len(clashes)} measurements have different values for the same seed in different files, "
                      f"averaged as repeats (first: {first['model']} {first['benchmark']}/{first['split']}/"
                      f"{first['metric']} seed {first['seed']}); a sweep parameter that changes a model belongs in "
                      "its name ('<model>@name=value')", stacklevel=2)
    pooled = per_seed.groupby(key, sort=False).agg(
        value=("value", "mean"), sd=("value", "std"), n_seeds=("seed", "size"), n=("n", "mean"),
        seeds=("seed", lambda seeds: ",".join(map(str, seeds))), one_low=("ci_low", "first"),
        one_high=("ci_high", "first")).reset_index()
    files = frame.groupby(key, sort=False).agg(notebooks=("notebook", lambda x: ",".join(sorted(set(x)))),
                                               sources=("source", lambda x: ";".join(sorted(set(x))))).reset_index()
    pooled = pooled.merge(files, on=key, how="left")
    several = pooled["n_seeds"] >= 2
    t_quantile = stats.t.ppf(0.5 + confidence / 2, np.maximum(pooled["n_seeds"] - 1, 1))
    half = t_quantile * pooled["sd"] / np.sqrt(pooled["n_seeds"])
    pooled["ci_low"] = np.where(several, pooled["value"] - half, pooled["one_low"])
    pooled["ci_high"] = np.where(several, pooled["value"] + half, pooled["one_high"])
    has_ci = np.isfinite(pooled["one_low"]) & np.isfinite(pooled["one_high"])
    pooled["ci_kind"] = np.where(several, "seeds", np.where(has_ci, "bootstrap", "none"))
    pooled.loc[~several, "sd"] = math.nan
    return pooled[columns]


def _pooled(df: pd.DataFrame, profile: str | None = None) -> pd.DataFrame:
    """Aggregated rows (aggregating raw ones), one per (profile, model, benchmark, split, metric): where several
    protocols or judges measured the same thing, the one with most seeds, then most items, is kept."""
    agg = df if "n_seeds" in df.columns else aggregate_seeds(df)
    if profile is not None:
        agg = agg[agg["profile"] == profile]
    if agg.empty:
        return agg
    agg = agg.assign(split=agg["split"].astype(str)).sort_values(["n_seeds", "n"], ascending=False, kind="stable")
    return agg.drop_duplicates(["profile", "model", "benchmark", "split", "metric"]).reset_index(drop=True)


def infer_profile(df: pd.DataFrame) -> str:
    """The one profile the results hold ("toy" when they hold none); an error when they hold several."""
    profiles = sorted(set(df["profile"].astype(str))) if len(df) else ["toy"]
    if len(profiles) != 1:
        raise ValueError(f"the results hold profiles {profiles}; pass profile= to say which one to report")
    return profiles[0]


# ------------------------------------------------------------------------------------------------------------
# Measures and models


@dataclass(frozen=True)
class Measure:
    """One number of results.csv, shown as value * factor (e.g. a 0-1 F1 as 0-100 points)."""

    benchmark: str
    split: str
    metric: str
    label: str
    factor: float = 1.0


HEADLINE_MEASURES = (
    Measure("shapes-mmvet", "all", "total", "Shapes-MM-Vet (0-100)"),
    Measure("shapes-llavabench", "all", "relative", "Shapes-LLaVA-Bench (relative %)"),
    Measure("shapes-pope", "all", "f1_mean", "Shapes-POPE F1 x100", 100.0),
    Measure("shapes-mmbench", "all", "circular_acc", "Shapes-MMBench CircularEval %", 100.0),
    Measure("shapes-mmhal", "all", "average", "Shapes-MMHal (0-6)"),
    Measure("shapes-objhal", "all", "CHAIRs_refine", "Shapes-ObjHal CHAIRs % (lower better)", 100.0),
    Measure("shapes-amber", "generative", "CHAIR", "Shapes-AMBER CHAIR (lower better)"),
    Measure("text-suite", "text", "prompt_strict_acc", "Text suite strict %", 100.0),
    Measure("textsuite", "heldout", "prompt_strict_acc", "Text suite strict % (textsuite edition)", 100.0),
    Measure("text-mtbench", "all", "overall", "MT-Bench-style (1-10)"),
    Measure("text-alpacaeval", "all", "win_rate", "AlpacaEval-style win %"),
)
# The offline text measure, in order of preference: notebook 01's rows, which the alignment notebooks also write
# for every model they evaluate (same prompts and decoding), then the textsuite edition's (the runner's settings).
# Claims compare models on one measure only, never across the two.
TEXT_MEASURES = (HEADLINE_MEASURES[7], HEADLINE_MEASURES[8])


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float
    n_seeds: int
    ci_kind: str

    def text(self, digits: int = 3) -> str:
        ci = (f" [{self.ci_low:.{digits}g}, {self.ci_high:.{digits}g}]"
              if np.isfinite(self.ci_low) and np.isfinite(self.ci_high) else " [no CI]")
        return f"{self.value:.{digits}g}{ci}" + (f" ({self.n_seeds} seeds)" if self.n_seeds > 1 else "")

    def above(self, other: Estimate) -> bool:
        """The 95% intervals are disjoint with this one higher."""
        return bool(np.isfinite(self.ci_low) and np.isfinite(other.ci_high) and self.ci_low > other.ci_high)


def estimate(pooled: pd.DataFrame, model: str | None, measure: Measure) -> Estimate | None:
    """The measurement of `model` on `measure` (scaled by its factor), or None when it was not measured."""
    if model is None or pooled.empty:
        return None
    rows = pooled[(pooled["model"] == model) & (pooled["benchmark"] == measure.benchmark)
                  & (pooled["split"].astype(str) == measure.split) & (pooled["metric"] == measure.metric)]
    if rows.empty or not np.isfinite(float(rows.iloc[0]["value"])):
        return None  # an undefined metric (NaN) supports no verdict
    row, f = rows.iloc[0], measure.factor
    return Estimate(float(row["value"]) * f, float(row["ci_low"]) * f, float(row["ci_high"]) * f,
                    int(row["n_seeds"]), str(row["ci_kind"]))


def model_roles(profile: str, models: Mapping[str, str | None] | None = None,
                available: Sequence[str] | None = None) -> dict[str, str]:
    """{Table 4 row: our model name}. Defaults: the profile's base LLM and MLLM and "<mllm>-sft", "-steerlm",
    "-rs", "-dpo" (bench.shapes.table.default_models). When `available` is given and a default name is not in
    it, the last part of a hub id is tried ("lmsys/vicuna-13b-v1.5" -> "vicuna-13b-v1.5"). `models` overrides."""
    from mmalign_utils.bench.shapes.table import default_models

    defaults = {role: name for role, name in default_models(profile).items() if role in ROLES}
    seen = set(available) if available is not None else None
    chosen = {}
    for role, name in defaults.items():
        short = name.split("/")[-1]
        chosen[role] = short if seen is not None and name not in seen and short in seen else name
    chosen.update({role: name for role, name in (models or {}).items() if name})
    return chosen


def _common_text_measure(pooled: pd.DataFrame, names: Sequence[str]) -> tuple[Measure | None, str]:
    """The first text measure on which every model in `names` was measured, or None and what is missing."""
    for measure in TEXT_MEASURES:
        if all(estimate(pooled, name, measure) is not None for name in names):
            return measure, ""
    coverage = {m.benchmark: [n for n in names if estimate(pooled, n, m) is not None] for m in TEXT_MEASURES}
    return None, "; ".join(f"{bench} has {have or 'none'}" for bench, have in coverage.items())


# ------------------------------------------------------------------------------------------------------------
# Table 4


def table4(df: pd.DataFrame, profile: str, models: Mapping[str, str | None] | None = None) -> pd.DataFrame:
    """The paper's Table 4 layout with our numbers beside the paper's (bench.shapes.table.render_table4): rows
    base LLM, MLLM, SFT, SteerLM, rejection sampling, DPO; columns (benchmark, "paper" | "ours"), plus
    ("Text suite", "ours"). `df`: raw or aggregated results. attrs: "models" (row -> our model), "ci"
    ((row, benchmark) -> (low, high) on the shown scale), "text_measure"."""
    from mmalign_utils.bench.shapes.table import COLUMN_SOURCES, render_table4

    pooled = _pooled(df, profile)
    roles = model_roles(profile, models, available=list(pooled["model"]) if len(pooled) else [])
    table = render_table4(pooled if len(pooled) else pd.DataFrame(columns=[*MEASUREMENT_KEY, "value"]), profile,
                          models={"RLHF": None, **roles}, extra_columns=False)
    table = table.loc[list(ROLES)].copy()
    ci: dict[tuple[str, str], tuple[float, float]] = {}
    for column, (benchmark, split, metric, factor) in COLUMN_SOURCES.items():
        measure = Measure(benchmark, split, metric, column, factor)
        for role in ROLES:
            found = estimate(pooled, roles.get(role), measure)
            if found is not None:
                ci[(role, column)] = (found.ci_low, found.ci_high)
    text, _ = _common_text_measure(pooled, [roles[r] for r in ROLES if r in roles])
    if text is None:  # not every row has one measure: take the measure covering most rows
        text = max(TEXT_MEASURES, key=lambda m: sum(estimate(pooled, roles.get(r), m) is not None for r in ROLES))
    values = []
    for role in ROLES:
        found = estimate(pooled, roles.get(role), text)
        values.append(found.value if found else math.nan)
        if found is not None:
            ci[(role, "Text suite")] = (found.ci_low, found.ci_high)
    table[("Text suite", "ours")] = values
    table.attrs.update({"models": {r: roles.get(r) for r in ROLES}, "ci": ci, "profile": profile,
                        "text_measure": f"{text.benchmark}/{text.split}/{text.metric} x{text.factor:g}"})
    return table


_DIGITS = {"POPE": 3, "MT-Bench": 2}


def table4_markdown(table: pd.DataFrame) -> str:
    """Table 4 as markdown: "paper | ours [95% CI]" per benchmark; "–" = not reported (paper) / not measured."""
    ci = table.attrs.get("ci", {})
    models = table.attrs.get("models", {})
    benchmarks = list(dict.fromkeys(b for b, _ in table.columns))
    header = ["row", "our model"] + [f"{b} ({s})" for b, s in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for role in table.index:
        cells = [role, f"`{models.get(role)}`" if models.get(role) else "–"]
        for benchmark in benchmarks:
            digits = _DIGITS.get(benchmark, 1)
            for source in ("paper", "ours"):
                if (benchmark, source) not in table.columns:
                    continue
                value = table.loc[role, (benchmark, source)]
                cell = "–" if not np.isfinite(value) else f"{value:.{digits}f}"
                low, high = ci.get((role, benchmark), (math.nan, math.nan)) if source == "ours" else (math.nan,) * 2
                if np.isfinite(value) and np.isfinite(low) and np.isfinite(high):
                    cell += f" [{low:.{digits}f}, {high:.{digits}f}]"
                cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table4_flat(table: pd.DataFrame) -> pd.DataFrame:
    """Table 4 with flat column names ("MM-Vet paper", "MM-Vet ours", "MM-Vet ours ci_low", ...) for a CSV."""
    ci = table.attrs.get("ci", {})
    flat = pd.DataFrame(index=table.index)
    flat["model"] = [table.attrs.get("models", {}).get(r) for r in table.index]
    for benchmark, source in table.columns:
        flat[f"{benchmark} {source}"] = table[(benchmark, source)]
        if source == "ours":
            for i, end in enumerate(("ci_low", "ci_high")):
                flat[f"{benchmark} ours {end}"] = [ci.get((r, benchmark), (math.nan, math.nan))[i] for r in table.index]
    return flat


# ------------------------------------------------------------------------------------------------------------
# Bar charts


def _ordered_models(pooled: pd.DataFrame, roles: Mapping[str, str], include_ablations: bool) -> list[str]:
    present = list(dict.fromkeys(pooled["model"]))
    ordered = [roles[r] for r in ROLES if roles.get(r) in present]
    rest = sorted(m for m in present if m not in ordered and (include_ablations or "@" not in m))
    return ordered + rest


def benchmark_bars_table(df: pd.DataFrame, profile: str, models: Mapping[str, str | None] | None = None,
                         measures: Sequence[Measure] = HEADLINE_MEASURES, include_ablations: bool = False
                         ) -> pd.DataFrame:
    """Long table behind the bar charts: measure, model, value, ci_low, ci_high, n_seeds (shown scale)."""
    pooled = _pooled(df, profile)
    if pooled.empty:
        return pd.DataFrame(columns=["measure", "model", "value", "ci_low", "ci_high", "n_seeds"])
    roles = model_roles(profile, models, available=list(pooled["model"]))
    rows = []
    for measure in measures:
        for model in _ordered_models(pooled, roles, include_ablations):
            found = estimate(pooled, model, measure)
            if found is not None:
                rows.append({"measure": measure.label, "model": model, "value": found.value, "ci_low": found.ci_low,
                             "ci_high": found.ci_high, "n_seeds": found.n_seeds})
    return pd.DataFrame(rows, columns=["measure", "model", "value", "ci_low", "ci_high", "n_seeds"])


def _error_bars(values, lows, highs) -> np.ndarray:
    values, lows, highs = (np.asarray(x, dtype=float) for x in (values, lows, highs))
    below, above = np.nan_to_num(values - lows), np.nan_to_num(highs - values)
    return np.vstack([np.clip(below, 0, None), np.clip(above, 0, None)])


def plot_benchmark_bars(df: pd.DataFrame, profile: str, models: Mapping[str, str | None] | None = None,
                        measures: Sequence[Measure] = HEADLINE_MEASURES, include_ablations: bool = False):
    """One panel per measured benchmark, one bar per model with its 95% CI; None when nothing is measured."""
    import matplotlib.pyplot as plt

    bars = benchmark_bars_table(df, profile, models, measures, include_ablations)
    if bars.empty:
        return None
    labels = list(dict.fromkeys(bars["measure"]))
    all_models = list(dict.fromkeys(bars["model"]))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {m: colours[i % len(colours)] for i, m in enumerate(all_models)}
    ncols = min(3, len(labels))
    nrows = math.ceil(len(labels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax, label in zip(axes.flat, labels):
        sub = bars[bars["measure"] == label]
        x = np.arange(len(sub))
        ax.bar(x, sub["value"], yerr=_error_bars(sub["value"], sub["ci_low"], sub["ci_high"]), capsize=3,
               color=[colour[m] for m in sub["model"]])
        ax.set_xticks(x, sub["model"], rotation=35, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    fig.suptitle(f"{profile} profile: headline metric per benchmark (95% CI)")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------------------
# Ablations: data scaling and label noise

ABLATION_KNOBS = {"data": 1.0, "flip": 0.0}  # knob -> the value of the plain (un-suffixed) model
PAPER_DATA_SCALING = {0.25: 6.39, 0.5: 6.46, 0.75: 6.61, 1.0: 6.73}  # MT-Bench, read off the paper's plot (§6.2)
PAPER_LABEL_NOISE = {0.0: 6.73, 0.25: 6.35, 0.5: 6.26, 0.75: 5.99}  # MT-Bench, the paper's Table 5
PAPER_TEXT_REFERENCES = {"base LLM": 6.57, "MLLM": 5.99}  # MT-Bench of Vicuna-1.5-13B and LLaVA-1.5-13B (Table 4)
_ABLATION_NAME = re.compile(r"^(?P<model>.+)@(?P<knob>[A-Za-z_]+)=(?P<value>[-+0-9.eE]+)$")


def parse_ablation(model: str) -> tuple[str, str, float] | None:
    """'toy-llava-dpo@data=0.5' -> ('toy-llava-dpo', 'data', 0.5); None for a plain model name."""
    match = _ABLATION_NAME.match(model)
    if not match:
        return None
    try:
        return match["model"], match["knob"], float(match["value"])
    except ValueError:
        return None


def ablation_table(df: pd.DataFrame, profile: str, knob: str, methods: Sequence[str] = ("DPO",),
                   models: Mapping[str, str | None] | None = None, measure: Measure | None = None) -> pd.DataFrame:
    """Metric against an ablation knob ("data": share of training data, "flip": share of flipped pairs) for each
    method (Table 4 row): its plain model sits at the knob's default (data 1.0, flip 0.0), "<model>@<knob>=v" at v.
    Columns: method, model, <knob>, value, ci_low, ci_high, n_seeds, measure. `measure` defaults to the first text
    measure on which the plain model was measured. attrs["measure"] is the Measure used (None: nothing measured)."""
    if knob not in ABLATION_KNOBS:
        raise ValueError(f"unknown ablation knob {knob!r}; choose one of {sorted(ABLATION_KNOBS)}")
    columns = ["method", "model", knob, "value", "ci_low", "ci_high", "n_seeds", "measure"]
    pooled = _pooled(df, profile)
    roles = model_roles(profile, models, available=list(pooled["model"]) if len(pooled) else [])
    if measure is None and len(pooled):
        candidates = [roles[m] for m in methods if m in roles]
        measure = next((m for m in TEXT_MEASURES if any(estimate(pooled, c, m) is not None for c in candidates)),
                       None)
    rows = []
    for method in methods:
        plain = roles.get(method)
        if plain is None or measure is None:
            continue
        points = {ABLATION_KNOBS[knob]: plain}
        for name in set(pooled["model"]):
            parsed = parse_ablation(name)
            if parsed and parsed[0] == plain and parsed[1] == knob:
                points[parsed[2]] = name
        for level, name in sorted(points.items()):
            found = estimate(pooled, name, measure)
            if found is not None:
                rows.append({"method": method, "model": name, knob: level, "value": found.value,
                             "ci_low": found.ci_low, "ci_high": found.ci_high, "n_seeds": found.n_seeds,
                             "measure": measure.label})
    table = pd.DataFrame(rows, columns=columns)
    table.attrs["measure"] = measure
    return table


def plot_ablation(df: pd.DataFrame, profile: str, knob: str, methods: Sequence[str] = ("DPO",),
                  models: Mapping[str, str | None] | None = None, measure: Measure | None = None):
    """Left: our metric against the knob with 95% CIs and the base LLM / MLLM as horizontal bands (same measure).
    Right: the paper's MT-Bench curve (data: §6.2's plot; flip: Table 5) with Vicuna and LLaVA as lines."""
    import matplotlib.pyplot as plt

    table = ablation_table(df, profile, knob, methods, models, measure)
    measure = table.attrs["measure"]
    pooled = _pooled(df, profile)
    roles = model_roles(profile, models, available=list(pooled["model"]) if len(pooled) else [])
    xlabel = "share of training data" if knob == "data" else "share of DPO pairs flipped"
    reference = PAPER_DATA_SCALING if knob == "data" else PAPER_LABEL_NOISE
    fig, (ours, paper) = plt.subplots(1, 2, figsize=(11, 3.8))
    if table.empty:
        ours.text(0.5, 0.5, f"not measured:\nno '<model>@{knob}=...' rows\nfor {', '.join(methods)}",
                  ha="center", va="center", transform=ours.transAxes)
    for method, sub in table.groupby("method", sort=False):
        ours.errorbar(sub[knob], sub["value"], yerr=_error_bars(sub["value"], sub["ci_low"], sub["ci_high"]),
                      marker="o", capsize=3, label=method)
    for role, style in (("base LLM", "--"), ("MLLM", ":")):
        found = estimate(pooled, roles.get(role), measure) if measure is not None else None
        if found is not None:
            line = ours.axhline(found.value, linestyle=style, color="grey", label=f"{role} ({roles[role]})")
            if np.isfinite(found.ci_low) and np.isfinite(found.ci_high):
                ours.axhspan(found.ci_low, found.ci_high, color=line.get_color(), alpha=0.12)
    right_end = max([*reference, *table[knob]]) + 0.05  # the same x range on both panels
    for ax in (ours, paper):
        ax.set_xlim(-0.05 if knob == "flip" else 0.0, right_end)
    ours.set_xlabel(xlabel)
    ours.set_ylabel(measure.label if measure is not None else "")
    ours.set_title(f"ours ({profile})")
    if ours.get_legend_handles_labels()[0]:
        ours.legend(fontsize=8)
    paper.plot(list(reference), list(reference.values()), marker="s", color="black", label="DPO (paper)")
    paper.axhline(PAPER_TEXT_REFERENCES["base LLM"], linestyle="--", color="grey", label="Vicuna-1.5-13B")
    paper.axhline(PAPER_TEXT_REFERENCES["MLLM"], linestyle=":", color="grey", label="LLaVA-1.5-13B")
    paper.set_xlabel(xlabel)
    paper.set_ylabel("MT-Bench (GPT-4, 1-10)")
    paper.set_title("paper (" + ("§6.2, read off the plot" if knob == "data" else "Table 5") + ")")
    paper.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------------------
# Answer lengths on the text suite

PER_PROMPT_DIR = "textsuite_per_prompt"
PAPER_ANSWER_LENGTHS = pd.DataFrame(  # paper-recipe.md §6.4 (inferred from committed generations), characters
    {"MT-Bench mean chars per turn": [1476, 935, 1014, math.nan, 1683, 1042, 883, 775, 289],
     "AlpacaEval mean output chars": [1435, 1070, math.nan, 1068, 1900, math.nan, 984, math.nan, math.nan]},
    index=pd.Index(["DPO (final)", "LLaVA-1.5-13B", "Vicuna-7B", "Vicuna-13B", "LLaVA-RLHF", "rejection sampling",
                    "SteerLM", "Gemini-answer SFT", "BLIP-2"], name="model"))


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=@-]+", "_", name)


def save_text_per_prompt(per_prompt: pd.DataFrame, artifacts_dir: str | Path, model: str, seed: int,
                         profile: str) -> Path:
    """Save a text-suite per-prompt table (textsuite.per_prompt_table: id, strict, n_words, ...) where notebook 07
    finds it: {artifacts_dir}/textsuite_per_prompt/<model>__seed<seed>.csv."""
    missing = {"id", "strict", "n_words"} - set(per_prompt.columns)
    if missing:
        raise ValueError(f"per-prompt table for {model!r} lacks {sorted(missing)}; "
                         "pass textsuite.per_prompt_table(...)")
    path = Path(artifacts_dir) / PER_PROMPT_DIR / f"{_safe_name(model)}__seed{seed}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    per_prompt.drop(columns=[c for c in ("model", "seed", "profile") if c in per_prompt]).assign(
        model=model, seed=seed, profile=profile).to_csv(path, index=False)
    return path


def _notebook01_context(folder: Path, profile: str, roles: Mapping[str, str]) -> tuple[str, int, dict[str, str]]:
    """Profile, seed and {condition: model} of a notebook 01 per-prompt file, read from the results.csv written
    beside it: the MLLM is the model with a "noisy-image" text-suite row, the base LLM the other one. What the
    rows cannot tell falls back to `profile`, seed -1 and the profile's roles."""
    names = {"base LLM": roles["base LLM"], "MLLM": roles["MLLM"]}
    results = folder.parent / "results.csv"
    if not results.exists():
        return profile, -1, names
    rows = _read_one(results, "")
    rows = rows[rows["notebook"].str.startswith("01") & (rows["benchmark"] == "text-suite")]
    run_profile = str(rows["profile"].iloc[0]) if rows["profile"].nunique() == 1 else profile
    run_seed = int(rows["seed"].iloc[0]) if rows["seed"].nunique() == 1 else -1
    mllm = set(rows.loc[rows["split"] == "noisy-image", "model"])
    base = set(rows["model"]) - mllm
    if len(mllm) == 1 and len(base) == 1:
        names = {"base LLM": base.pop(), "MLLM": mllm.pop()}
    return run_profile, run_seed, names


def load_text_per_prompt(artifacts_dir: str | Path, profile: str,
                         models: Mapping[str, str | None] | None = None) -> pd.DataFrame:
    """Per-prompt text-suite answers of every model below `artifacts_dir`, for one profile: columns model, seed,
    id, strict, n_words, origin (+ whatever else the files hold).

    Read from <any folder>/textsuite_per_prompt/*.csv (save_text_per_prompt) and from notebook 01's
    01_degradation/per_prompt.csv (its "base LLM" and "MLLM" conditions, named as in the results.csv beside it,
    else by the profile's roles). A model found in both keeps only the first kind, which records its seed
    and profile (the alignment notebooks save the MLLM's answers there too). Same model, seed and prompt twice (a
    copied folder): kept once."""
    root = Path(artifacts_dir)
    roles = model_roles(profile, models)
    frames = []
    for path in sorted(p for p in root.rglob(f"{PER_PROMPT_DIR}/*.csv") if not _hidden(p, root)):
        frame = pd.read_csv(path)
        missing = {"id", "strict", "n_words", "model", "seed", "profile"} - set(frame.columns)
        if missing:
            raise ValueError(f"{path}: lacks columns {sorted(missing)}; write it with report.save_text_per_prompt")
        frames.append(frame[frame["profile"].astype(str) == profile].assign(origin=path.relative_to(root).as_posix()))
    saved_models = set(pd.concat(frames)["model"]) if frames else set()
    for path in sorted(root.rglob("01_degradation/per_prompt.csv")):
        run_profile, run_seed, names = _notebook01_context(path.parent, profile, roles)
        if run_profile != profile or _hidden(path, root):
            continue
        frame = pd.read_csv(path)
        frame = frame[frame["condition"].isin(names)]
        frame = frame.assign(model=frame["condition"].map(names), seed=run_seed, profile=profile,
                             origin=path.relative_to(root).as_posix())
        frames.append(frame[~frame["model"].isin(saved_models)])
    if not frames:
        return pd.DataFrame(columns=["model", "seed", "id", "strict", "n_words", "origin"])
    table = pd.concat(frames, ignore_index=True)
    return table.drop_duplicates(["model", "seed", "id"], keep="first").reset_index(drop=True)


def _per_model_prompt_means(per_prompt: pd.DataFrame, score: str, order: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (model, prompt): seeds averaged, so a prompt weighs the same whatever the number of seeds.
    Models in `order` come first, in that order; the others follow as found."""
    means = per_prompt.groupby(["model", "id"], sort=False)[[score, "n_words"]].mean().reset_index()
    found = list(dict.fromkeys(means["model"]))
    ranked = [m for m in order if m in found] + [m for m in found if m not in order]
    return means.assign(model=pd.Categorical(means["model"], ranked)).sort_values("model", kind="stable").assign(
        model=lambda frame: frame["model"].astype(str)).reset_index(drop=True)


def length_summary(per_prompt: pd.DataFrame, score: str = "strict", n_boot: int = 2000, seed: int = 0,
                   order: Sequence[str] = ()) -> pd.DataFrame:
    """Per model: prompts, seeds, mean words and mean score with percentile bootstrap 95% CIs over prompts.
    Models in `order` (e.g. model_roles(...).values()) come first."""
    from mmalign_utils.results import bootstrap_ci

    columns = ["model", "n_prompts", "n_seeds", "mean_words", "words_ci_low", "words_ci_high", score,
               f"{score}_ci_low", f"{score}_ci_high"]
    if per_prompt.empty:
        return pd.DataFrame(columns=columns)
    means = _per_model_prompt_means(per_prompt, score, order)
    rows = []
    for model, group in means.groupby("model", sort=False):
        words = bootstrap_ci(group["n_words"].to_numpy(float), n_boot=n_boot, seed=seed)
        scores = bootstrap_ci(group[score].to_numpy(float), n_boot=n_boot, seed=seed)
        rows.append([model, len(group), per_prompt.loc[per_prompt["model"] == model, "seed"].nunique(), *words,
                     *scores])
    return pd.DataFrame(rows, columns=columns)


def _fit_fixed_effects(y: np.ndarray, words: np.ndarray, model_idx: np.ndarray, prompt_idx: np.ndarray,
                       n_models: int, n_prompts: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Least squares of y = a[model] + g[prompt] + b * words; returns (a, g, b). Solved through the normal
    equations, built from counts and sums (the design is one-hot, so X'X costs no matrix product). The split of
    the level between a and g is arbitrary (X'X is singular; lstsq picks one solution): a + g and b, which are
    what the caller uses, are the same for every solution."""
    scale = float(words.std()) or 1.0  # word counts in units of their spread keep X'X well conditioned
    words = words / scale
    size = n_models + n_prompts + 1
    cells = np.bincount(model_idx * n_prompts + prompt_idx, minlength=n_models * n_prompts)
    normal = np.zeros((size, size))
    normal[:n_models, n_models:-1] = cells.reshape(n_models, n_prompts)
    normal[n_models:-1, :n_models] = normal[:n_models, n_models:-1].T
    normal[np.arange(n_models), np.arange(n_models)] = np.bincount(model_idx, minlength=n_models)
    prompt_diag = np.arange(n_models, n_models + n_prompts)
    normal[prompt_diag, prompt_diag] = np.bincount(prompt_idx, minlength=n_prompts)
    normal[:n_models, -1] = normal[-1, :n_models] = np.bincount(model_idx, words, minlength=n_models)
    normal[n_models:-1, -1] = normal[-1, n_models:-1] = np.bincount(prompt_idx, words, minlength=n_prompts)
    normal[-1, -1] = float(words @ words)
    right = np.concatenate([np.bincount(model_idx, y, minlength=n_models),
                            np.bincount(prompt_idx, y, minlength=n_prompts), [float(words @ y)]])
    coef = np.linalg.lstsq(normal, right, rcond=None)[0]
    return coef[:n_models], coef[n_models:-1], float(coef[-1]) / scale


def _lc_scores(y: np.ndarray, words: np.ndarray, model_idx: np.ndarray, prompt_idx: np.ndarray, n_models: int,
               n_prompts: int, reference: int) -> tuple[np.ndarray, float, float]:
    a, g, b = _fit_fixed_effects(y, words, model_idx, prompt_idx, n_models, n_prompts)
    reference_words = float(words[model_idx == reference].mean())
    # Each model's predicted score on the average prompt, had it answered at the reference model's mean length.
    return a + g.mean() + b * reference_words, b, reference_words


def length_controlled_scores(per_prompt: pd.DataFrame, reference_model: str, score: str = "strict",
                             n_boot: int = 500, seed: int = 0, order: Sequence[str] = ()) -> pd.DataFrame:
    """Text-suite score with answer length held fixed at the reference (base) model's mean length.

    Method: seeds averaged per (model, prompt); the linear model score ~ model + prompt + b * words (model and
    prompt fixed effects, one common slope b) is fit by least squares; a model's length-controlled score is its
    prediction on the average prompt at the reference model's mean word count, i.e. with balanced data its raw
    mean minus b * (its mean words - the reference's). 95% CIs: percentile bootstrap resampling prompts (each
    prompt with all its models' answers) and refitting. Columns: model, raw, mean_words, lc_score, lc_ci_low,
    lc_ci_high, slope_per_100_words, reference_model, reference_words. Models in `order` come first."""
    columns = ["model", "raw", "mean_words", "lc_score", "lc_ci_low", "lc_ci_high", "slope_per_100_words",
               "reference_model", "reference_words"]
    if per_prompt.empty:
        return pd.DataFrame(columns=columns)
    means = _per_model_prompt_means(per_prompt, score, order)
    models = list(dict.fromkeys(means["model"]))
    if reference_model not in models:
        raise ValueError(f"reference model {reference_model!r} has no per-prompt text-suite answers; "
                         f"those present: {models}")
    prompts = list(dict.fromkeys(means["id"]))
    y, words = means[score].to_numpy(float), means["n_words"].to_numpy(float)
    model_idx = means["model"].map({m: i for i, m in enumerate(models)}).to_numpy()
    prompt_idx = means["id"].map({p: i for i, p in enumerate(prompts)}).to_numpy()
    reference = models.index(reference_model)
    lc, slope, reference_words = _lc_scores(y, words, model_idx, prompt_idx, len(models), len(prompts), reference)
    rows_of = [np.flatnonzero(prompt_idx == p) for p in range(len(prompts))]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        picked = rng.integers(0, len(prompts), size=len(prompts))
        rows = np.concatenate([rows_of[p] for p in picked])
        # A prompt drawn twice enters as two prompts, each with its own fixed effect: a cluster bootstrap.
        new_prompt = np.concatenate([np.full(len(rows_of[p]), k) for k, p in enumerate(picked)])
        if len(set(model_idx[rows])) < len(models):
            continue  # a model lost all its prompts in this draw (only with very few prompts)
        draws.append(_lc_scores(y[rows], words[rows], model_idx[rows], new_prompt, len(models), len(prompts),
                                reference)[0])
    low, high = (np.quantile(np.vstack(draws), [0.025, 0.975], axis=0) if draws
                 else (np.full(len(models), math.nan),) * 2)
    raw = means.groupby("model", sort=False)[[score, "n_words"]].mean()
    return pd.DataFrame({"model": models, "raw": raw.loc[models, score].to_numpy(),
                         "mean_words": raw.loc[models, "n_words"].to_numpy(), "lc_score": lc, "lc_ci_low": low,
                         "lc_ci_high": high, "slope_per_100_words": slope * 100, "reference_model": reference_model,
                         "reference_words": reference_words}, columns=columns)


def length_bins_table(per_prompt: pd.DataFrame, score: str = "strict", n_bins: int = 3) -> pd.DataFrame:
    """Mean score per model within answer-length bins (quantiles of all answers' word counts): do models differ
    at the same length? Rows: length bin; columns: (model, "score" | "answers")."""
    if per_prompt.empty:
        return pd.DataFrame()
    means = _per_model_prompt_means(per_prompt, score)
    means["length bin"] = pd.qcut(means["n_words"], q=n_bins, duplicates="drop")
    grouped = means.groupby(["length bin", "model"], observed=True)[score].agg(["mean", "size"])
    grouped.columns = ["score", "answers"]
    return grouped.unstack("model").swaplevel(axis=1).sort_index(axis=1)


def plot_lengths(summary: pd.DataFrame, controlled: pd.DataFrame | None = None):
    """Left: mean words per model (95% CI). Right: raw vs length-controlled score (95% CI)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    if summary.empty:
        left.text(0.5, 0.5, "not measured: no per-prompt text-suite answers", ha="center", va="center",
                  transform=left.transAxes)
    else:
        x = np.arange(len(summary))
        left.bar(x, summary["mean_words"], yerr=_error_bars(summary["mean_words"], summary["words_ci_low"],
                                                            summary["words_ci_high"]), capsize=3)
        left.set_xticks(x, summary["model"], rotation=30, ha="right", fontsize=8)
        left.set_ylabel("mean words per answer")
        left.set_title("answer length on the text suite")
    if controlled is None or controlled.empty:
        right.text(0.5, 0.5, "length control not measured:\nno per-prompt answers of a reference model",
                   ha="center", va="center", transform=right.transAxes)
        right.axis("off")
    else:
        x = np.arange(len(controlled))
        right.bar(x - 0.2, controlled["raw"], 0.4, label="raw")
        right.bar(x + 0.2, controlled["lc_score"], 0.4, yerr=_error_bars(
            controlled["lc_score"], controlled["lc_ci_low"], controlled["lc_ci_high"]), capsize=3,
            label=f"at {controlled['reference_words'].iloc[0]:.0f} words")
        right.set_xticks(x, controlled["model"], rotation=30, ha="right", fontsize=8)
        right.set_ylabel("prompt-level strict accuracy")
        right.set_title(f"length-controlled (reference: {controlled['reference_model'].iloc[0]})")
        right.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------------------
# Figure 3: attribute correlations from notebook 02's annotation store

_PAPER_PAIRS = {("helpfulness", "correctness"): 0.93, ("helpfulness", "coherence"): 0.80,
                ("correctness", "coherence"): 0.82, ("complexity", "helpfulness"): 0.67,
                ("complexity", "correctness"): 0.65, ("complexity", "coherence"): 0.60,
                ("verbosity", "helpfulness"): 0.50, ("verbosity", "correctness"): 0.48,
                ("verbosity", "coherence"): 0.39, ("verbosity", "complexity"): 0.69}


def paper_figure3() -> pd.DataFrame:
    """The paper's Figure 3 (§6.3): Pearson r between attribute differences of response pairs (n = 500)."""
    matrix = pd.DataFrame(np.eye(len(ATTRIBUTES)), index=list(ATTRIBUTES), columns=list(ATTRIBUTES))
    for (a, b), r in _PAPER_PAIRS.items():
        matrix.loc[a, b] = matrix.loc[b, a] = r
    return matrix


def figure3_distance(ours: pd.DataFrame) -> float:
    """Mean absolute difference between our attribute-difference correlations and the paper's Figure 3, over the
    ten attribute pairs the paper reports: how far a judge's attribute structure is from Gemini's."""
    return float(np.mean([abs(float(ours.loc[a, b]) - r) for (a, b), r in _PAPER_PAIRS.items()]))


def find_annotation_stores(artifacts_dir: str | Path) -> list[Path]:
    """Folders below `artifacts_dir` holding an annotation store (notebook 02 writes
    {artifacts_dir}/{variant}/annotation/<samples file name>/<judge>/annotations.sqlite)."""
    from mmalign_utils.annotate.store import DB_NAME

    root = Path(artifacts_dir)
    return sorted(p.parent for p in root.rglob(DB_NAME) if not _hidden(p, root))


def pick_annotation_store(stores: Sequence[Path], artifacts_dir: str | Path, variant: str,
                          raw: pd.DataFrame | None = None) -> Path | None:
    """The annotation store to show: within the variant's folder (else anywhere), the store of the judge that
    notebook 02 last built the training sets with (its rows in `raw`, collect_results()), else the first.
    Calibration runs leave stores of other judges beside it (scripts/calibrate_oracle_miss.py)."""
    from mmalign_utils.annotation_report import store_folder_name

    root = Path(artifacts_dir)
    candidates = [s for s in stores if variant in s.relative_to(root).parts] or list(stores)
    if not candidates:
        return None
    if raw is not None and len(raw) and {"notebook", "judge"} <= set(raw.columns):
        judges = [j for j in raw.loc[raw["notebook"] == "02_annotation", "judge"] if isinstance(j, str) and j]
        if judges:
            named = [s for s in candidates if s.name == store_folder_name(judges[-1])]
            if named:
                return named[0]
    return candidates[0]


def _matching_samples(store_dir: Path, annotations: list[dict]) -> dict[str, list[str]]:
    """The store's sampled answers, {prompt_id: answers}; empty when none match. Notebook 02 keeps them in
    {variant}/samples/NAME.jsonl and the store in {variant}/annotation/NAME/<judge>/; for stores of the older
    layout ({variant}/annotation/<judge>/) the samples file whose prompts and answer counts match most items."""
    from mmalign_utils.sampling import read_samples

    counts = {str(a["item_id"]): len(a["scores"]) for a in annotations}
    own = store_dir.parents[2] / "samples" / f"{store_dir.parent.name}.jsonl" if len(store_dir.parents) > 2 else None
    candidates = ([own] if own is not None and own.is_file()
                  else sorted((store_dir.parent.parent / "samples").glob("*.jsonl")))
    best: dict[str, list[str]] = {}
    for path in candidates:
        answers = {str(r["prompt_id"]): list(r["answers"]) for r in read_samples(path)}
        matched = {p: a for p, a in answers.items() if counts.get(p) == len(a)}
        if len(matched) > len(best):
            best = matched
    return best


def annotation_pair_correlations(store_dir: str | Path) -> pd.DataFrame:
    """Pearson r between the attribute differences of every pair of answers to one prompt (each unordered pair
    once, first minus second), as notebook 02 and the paper's Figure 3; with a "length" row and column (word
    difference) when the sampled answers are found. attrs: n_pairs, n_prompts."""
    from mmalign_utils.annotate import load_annotations
    from mmalign_utils.annotation_report import score_difference_correlations

    store_dir = Path(store_dir)
    annotations = load_annotations(store_dir)
    answers = _matching_samples(store_dir, annotations)
    with_length = bool(answers) and all(str(a["item_id"]) in answers for a in annotations)
    return score_difference_correlations([row["scores"] for row in annotations],
                                         [answers[str(row["item_id"])] for row in annotations] if with_length else None)


def plot_attribute_heatmaps(ours: pd.DataFrame | None, paper: pd.DataFrame | None = None, title: str = "ours"):
    """Our correlation matrix beside the paper's Figure 3 (same colour scale, -1 to 1)."""
    from mmalign_utils.annotation_report import draw_correlation  # heavy imports, only when drawing

    import matplotlib.pyplot as plt

    paper = paper_figure3() if paper is None else paper
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), layout="constrained")
    image = None
    for ax, corr, name in ((axes[0], ours, title), (axes[1], paper, "paper, Figure 3 (n = 500 human-labelled pairs)")):
        if corr is None or corr.empty:
            ax.text(0.5, 0.5, "not measured: no annotation store", ha="center", va="center", transform=ax.transAxes)
            ax.axis("off")
            continue
        image = draw_correlation(ax, corr)
        ax.set_title(name, fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8)
    return fig


# ------------------------------------------------------------------------------------------------------------
# The paper's claims


def _better(a: Estimate, b: Estimate) -> str:
    """Claim a > b: holds when a is higher and the 95% intervals are disjoint; does not hold when a is not higher
    and its interval lies wholly at or below b's; inconclusive otherwise (the intervals overlap, or a CI is
    missing), whichever way the point estimates lean."""
    if a.value > b.value and a.above(b):
        return HOLDS
    if a.value <= b.value and np.isfinite(a.ci_high) and np.isfinite(b.ci_low) and a.ci_high <= b.ci_low:
        return DOES_NOT_HOLD
    return INCONCLUSIVE


def _not_worse(a: Estimate, b: Estimate) -> str:
    """Claim a >= b: holds when a is not lower; does not hold when a's interval lies wholly below b's;
    inconclusive otherwise."""
    if a.value >= b.value:
        return HOLDS
    return DOES_NOT_HOLD if b.above(a) else INCONCLUSIVE


def _within(a: Estimate, b: Estimate, tolerance: float) -> str:
    """Claim |a - b| <= tolerance: holds when the point difference is within; does not hold when every difference
    the two intervals allow, [a.low - b.high, a.high - b.low], lies outside; inconclusive otherwise."""
    if abs(a.value - b.value) <= tolerance:
        return HOLDS
    low, high = a.ci_low - b.ci_high, a.ci_high - b.ci_low
    if np.isfinite(low) and np.isfinite(high) and (low > tolerance or high < -tolerance):
        return DOES_NOT_HOLD
    return INCONCLUSIVE


def _combine(verdicts: Sequence[str]) -> str:
    """A chain (a ranking): does not hold if any link does not, holds if every link holds, else inconclusive."""
    if DOES_NOT_HOLD in verdicts:
        return DOES_NOT_HOLD
    return HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE


def claims_check(df: pd.DataFrame, profile: str | None = None, models: Mapping[str, str | None] | None = None,
                 tolerance_points: float = 2.0) -> pd.DataFrame:
    """The paper's claims, one row each, checked on our numbers: claim, statement, measure, paper, ours, verdict,
    note. Verdicts: holds, does not hold, inconclusive (the 95% intervals do not decide; the note says which way
    the point estimates lean), not measured (a needed value is absent; the note names it). Rules: `_better`,
    `_not_worse`, `_within`, `_combine`."""
    from mmalign_utils.bench.shapes.table import paper_table4

    profile = profile or infer_profile(df)
    pooled = _pooled(df, profile)
    roles = model_roles(profile, models, available=list(pooled["model"]) if len(pooled) else [])
    paper = paper_table4()
    rows = []

    def paper_text(column: str, names: Sequence[str]) -> str:
        return ", ".join(f"{n} {paper.loc[n, column]:g}" for n in names) + f" ({column})"

    def add(claim: str, statement: str, measure: str, paper_numbers: str, ours: str, verdict: str, note: str = "",
            agrees: bool | None = None):
        if verdict == INCONCLUSIVE and not note:
            lean = "agree with" if agrees else "go against"
            note = f"the point estimates {lean} the claim, but the 95% intervals do not decide it"
        rows.append({"claim": claim, "statement": statement, "measure": measure, "paper": paper_numbers,
                     "ours": ours, "verdict": verdict, "note": note})

    def descending(found: Sequence[Estimate]) -> bool:
        return all(x.value > y.value for x, y in zip(found, found[1:]))

    def text_pair_claim(claim: str, statement: str, names: Sequence[str], rule, paper_numbers: str) -> None:
        measure, missing = _common_text_measure(pooled, [roles[n] for n in names])
        if measure is None:
            add(claim, statement, "text suite", paper_numbers, "", NOT_MEASURED,
                f"no text measure has all of {[roles[n] for n in names]}: {missing}")
            return
        found = [estimate(pooled, roles[n], measure) for n in names]
        ours = "; ".join(f"{n} {e.text()}" for n, e in zip(names, found))
        add(claim, statement, measure.label, paper_numbers, ours, *rule(found))

    def both_text_columns(names: Sequence[str]) -> str:
        return paper_text("MT-Bench", names) + "; " + paper_text("AlpacaEval", names)

    text_pair_claim("a", "the MLLM is worse than its base LLM on text instructions", ["MLLM", "base LLM"],
                    lambda e: (_better(e[1], e[0]), "", descending([e[1], e[0]])),
                    both_text_columns(["MLLM", "base LLM"]))
    text_pair_claim("b", "DPO is at least as good as the base LLM on text instructions", ["DPO", "base LLM"],
                    lambda e: (_not_worse(e[0], e[1]), "", e[0].value >= e[1].value),
                    both_text_columns(["DPO", "base LLM"]))
    ranking = ["DPO", "rejection sampling", "SteerLM", "SFT"]
    text_pair_claim("c", "text ranking DPO > rejection sampling > SteerLM > SFT", ranking,
                    lambda e: (_combine([_better(x, y) for x, y in zip(e, e[1:])]), "", descending(e)),
                    paper_text("MT-Bench", ranking))

    visual = (("MM-Vet", Measure("shapes-mmvet", "all", "total", "Shapes-MM-Vet total"), "improves"),
              ("LLaVA-Bench", Measure("shapes-llavabench", "all", "relative", "Shapes-LLaVA-Bench relative"),
               "improves"),
              ("POPE", Measure("shapes-pope", "all", "f1_mean", "Shapes-POPE F1 x100", 100.0), "stable"),
              ("MMBench", Measure("shapes-mmbench", "all", "circular_acc", "Shapes-MMBench circular x100", 100.0),
               "stable"))
    for index, (column, measure, kind) in enumerate(visual, 1):
        dpo, mllm = estimate(pooled, roles.get("DPO"), measure), estimate(pooled, roles.get("MLLM"), measure)
        scale = 100 if column == "POPE" else 1  # the paper prints POPE as 0-1; points are x100
        paper_numbers = (f"MLLM {paper.loc['MLLM', column]:g} -> DPO {paper.loc['DPO', column]:g} "
                         f"({(paper.loc['DPO', column] - paper.loc['MLLM', column]) * scale:+.1f} points)")
        statement = (f"DPO improves the open-ended {column} edition over the MLLM" if kind == "improves" else
                     f"DPO moves the {column} edition by at most {tolerance_points:g} points from the MLLM")
        if dpo is None or mllm is None:
            absent = [r for r, e in (("DPO", dpo), ("MLLM", mllm)) if e is None]
            add(f"d{index}", statement, measure.label, paper_numbers, "", NOT_MEASURED,
                f"no {measure.benchmark}/{measure.split}/{measure.metric} value for {[roles.get(r) for r in absent]}")
            continue
        ours = f"MLLM {mllm.text()} -> DPO {dpo.text()} ({dpo.value - mllm.value:+.2f} points)"
        if kind == "improves":
            add(f"d{index}", statement, measure.label, paper_numbers, ours, _better(dpo, mllm),
                agrees=dpo.value > mllm.value)
        else:
            add(f"d{index}", statement, measure.label, paper_numbers, ours, _within(dpo, mllm, tolerance_points),
                agrees=abs(dpo.value - mllm.value) <= tolerance_points)

    for claim, knob, statement, pick in (
            ("e1", "data", "more preference data helps DPO (largest vs smallest data share)",
             lambda t: (t[-1], t[0])),
            ("e2", "flip", "flipped preference labels hurt DPO (no flips vs most flips)",
             lambda t: (t[0], t[-1]))):
        table = ablation_table(pooled, profile, knob, models=models)
        reference = PAPER_DATA_SCALING if knob == "data" else PAPER_LABEL_NOISE
        paper_numbers = ", ".join(f"{knob} {k:g}: {v:g}" for k, v in reference.items()) + " (MT-Bench)"
        label = table.attrs["measure"].label if table.attrs["measure"] is not None else "text suite"
        if len(table) < 2:
            add(claim, statement, label, paper_numbers, "", NOT_MEASURED,
                f"needs the DPO model at two or more {knob} levels ('{roles.get('DPO')}@{knob}=...'); found "
                f"{len(table)}")
            continue
        points = [Estimate(r.value, r.ci_low, r.ci_high, int(r.n_seeds), "") for r in table.itertuples()]
        ours = "; ".join(f"{knob} {level:g}: {e.text()}" for level, e in zip(table[knob], points))
        better, worse = pick(points)
        add(claim, statement, label, paper_numbers, ours, _better(better, worse), agrees=better.value > worse.value)
    return pd.DataFrame(rows, columns=["claim", "statement", "measure", "paper", "ours", "verdict", "note"])


def claims_summary(claims: pd.DataFrame) -> str:
    """Plain sentences: how many claims hold, then each claim with its verdict and our numbers or what is missing."""
    counts = claims["verdict"].value_counts()
    head = (f"{len(claims)} checks of the paper's claims: "
            + ", ".join(f"{v} {int(counts.get(v, 0))}" for v in (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_MEASURED))
            + ".")
    lines = [head]
    for r in claims.itertuples():
        evidence = r.ours if r.ours else r.note
        lines.append(f"({r.claim}) {r.statement}: {r.verdict.upper()}. Ours: {evidence}. Paper: {r.paper}.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------
# Writing tables for the README


def frame_markdown(frame: pd.DataFrame, float_format: str = "{:.3g}") -> str:
    """A DataFrame as a markdown table (index included when it is named), without the tabulate package."""
    data = frame.reset_index() if frame.index.name else frame
    header = [" / ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in data.columns]

    def cell(value) -> str:
        if isinstance(value, float):
            if math.isnan(value):
                return "–"
            return float_format.format(0.0 if abs(value) < 1e-12 else value)  # least-squares noise is zero
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in data.itertuples(index=False)]
    return "\n".join(lines)


def save_report_table(frame: pd.DataFrame, artifacts_dir: str | Path, name: str, markdown: str | None = None
                      ) -> tuple[Path, Path]:
    """Write {artifacts_dir}/{name}.csv and {name}.md (markdown: the given text, else frame_markdown)."""
    root = Path(artifacts_dir)
    root.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = root / f"{name}.csv", root / f"{name}.md"
    frame.to_csv(csv_path, index=bool(frame.index.name))
    md_path.write_text((markdown if markdown is not None else frame_markdown(frame)) + "\n", encoding="utf-8")
    return csv_path, md_path


# The figures the results page shows, in its order; the names notebooks 01 and 07 save under {artifacts}/figures/.
PUBLISHED_FIGURES = (
    ("01_degradation.png", "Notebook 01: the base LLM and the MLLM on the text suite"),
    ("07_benchmarks.png", "Every benchmark's headline metric per model, with 95% intervals"),
    ("07_lengths.png", "Answer lengths on the text suite"),
    ("07_data_scaling.png", "Data scaling"),
    ("07_label_noise.png", "Label noise"),
    ("07_attribute_correlations.png", "The judge's attribute-difference correlations beside the paper's Figure 3"),
)


def publish_results(artifacts_dir: str | Path, out_dir: str | Path, commit: str | None = None) -> Path:
    """Copy notebook 07's Table 4 and claims tables and the main figures from `artifacts_dir` into `out_dir`
    and write `out_dir/RESULTS.md`, which shows them with where they came from (the results.csv's SHA-256 and
    row count, the code commit, the date), so the README can show the numbers the main command produced.
    Raises FileNotFoundError naming the command to run when notebook 07's tables are missing; a figure that
    was not produced is listed as such, never replaced."""
    import shutil
    from datetime import datetime, timezone

    from mmalign_utils.stamps import sha256_file

    root, out = Path(artifacts_dir), Path(out_dir)
    needed = [root / "results.csv", root / "table4.md", root / "claims.md"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing {', '.join(missing)}: run the series (or at least notebook 07) first, "
                                f"e.g. `mmalign run 07 --artifacts-dir {root}`")
    (out / "figures").mkdir(parents=True, exist_ok=True)
    n_rows = len(pd.read_csv(root / "results.csv"))
    lines = ["# Results of the main command", "",
             f"Written by `mmalign publish --artifacts-dir {root} --out {out}` on "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from `results.csv` ({n_rows} rows, SHA-256 "
             f"{sha256_file(root / 'results.csv')[:16]}...)" + (f", code at commit {commit}" if commit else "")
             + ". Every number below comes from that file through notebook 07.", "",
             "## Table 4: the paper's numbers and ours", "", (root / "table4.md").read_text(encoding="utf-8").strip(),
             "", "## The paper's claims, checked", "", (root / "claims.md").read_text(encoding="utf-8").strip(), "",
             "## Figures", ""]
    for name, caption in PUBLISHED_FIGURES:
        source = root / "figures" / name
        if source.is_file():
            shutil.copyfile(source, out / "figures" / name)
            lines += [f"**{caption}**", "", f"![{caption}](figures/{name})", ""]
        else:
            lines += [f"**{caption}**: not produced by this run (no `figures/{name}`).", ""]
    page = out / "RESULTS.md"
    page.write_text("\n".join(lines), encoding="utf-8")
    return page


__all__ = [
    "ABLATION_KNOBS", "DOES_NOT_HOLD", "HEADLINE_MEASURES", "HOLDS", "INCONCLUSIVE", "MEASUREMENT_KEY",
    "NOT_MEASURED", "PAPER_ANSWER_LENGTHS", "PAPER_DATA_SCALING", "PAPER_LABEL_NOISE", "PAPER_TEXT_REFERENCES",
    "PER_PROMPT_DIR", "PUBLISHED_FIGURES", "ROLES", "TEXT_MEASURES", "Estimate", "Measure", "ablation_table",
    "aggregate_seeds", "annotation_pair_correlations", "benchmark_bars_table", "claims_check", "claims_summary",
    "collect_results", "estimate", "figure3_distance", "find_annotation_stores", "frame_markdown", "infer_profile",
    "length_bins_table", "length_controlled_scores", "length_summary", "load_text_per_prompt", "model_roles",
    "paper_figure3", "parse_ablation", "pick_annotation_store", "plot_ablation", "plot_attribute_heatmaps",
    "plot_benchmark_bars", "plot_lengths", "publish_results", "save_report_table", "save_text_per_prompt", "table4",
    "table4_flat", "table4_markdown",
]
