"""What notebooks 03-06 (SFT, rejection sampling, DPO, SteerLM) share: names, data, curves and evaluation.

    name = aligned_model_name(ctx, "dpo", data=0.5)          # "toy-llava-dpo@data=0.5"
    data = preference_dataset(ctx, dataset_name("dpo", data_fraction=0.5))   # notebook 02's dpo_images_50
    recipe = alignment_recipe(ctx, "dpo", name, data, **{"dpo.beta": 0.1})   # output under <variant>/aligned/NAME
    fig = plot_dpo_curves(result.log_history)                # loss, rewards, margins, accuracies, log-probs
    rows = evaluate_aligned(ctx, model, processor, name)     # text suite + the offline ShapesWorld editions
    start = starting_model_rows(ctx, start_path)             # the same evaluation of the starting MLLM, cached
    comparison_table({"toy-llava": start, name: rows})       # headline numbers side by side

Model names follow notebook 07's Table 4 convention (`bench.shapes.table.default_models`): `<mllm>-sft`, `-rs`,
`-steerlm`, `-dpo`, where `<mllm>` is the profile's MLLM ("toy-llava"); a run that differs from the method's
defaults appends its settings: `toy-llava-dpo@data=0.5`, `toy-llava-dpo@flip=0.25`,
`toy-llava-dpo@beta=0.3,loss=ipo`, `toy-llava-steerlm@complexity=2,verbosity=2`.
"""
from __future__ import annotations

import gc
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmalign_utils.results import RESULT_COLUMNS, ResultRow
from mmalign_utils.stamps import folder_stamp, is_saved_dataset, weights_digest

METHOD_SUFFIX = {"sft": "sft", "rejection_sampling": "rs", "steerlm": "steerlm", "dpo": "dpo"}
# Settings equal to these are left out of a model's name (the paper's recipe is the unnamed run).
DEFAULT_SETTINGS: dict[str, Any] = {"data": 1.0, "flip": 0.0, "beta": 0.1, "loss": "sigmoid", "source": "reference",
                                    "ref": "cached"}
SUBSET_PERCENTS = (25, 50, 75)  # the ablation subsets notebook 02 saves (annotation_report.ABLATION_FRACTIONS)
SFT_SOURCES = {"reference": "sft", "judge": "sft_judge"}


class MissingDatasetError(FileNotFoundError):
    """A training set that notebook 02 should have saved is not there; the message says what to run."""


# ------------------------------------------------------------------------------------------------------------
# Names, datasets, recipes


def percent_of(value: float, what: str, allow_zero: bool = False) -> int:
    """A fraction (0.25) or a percentage (25) as a whole percentage; refuses values outside (0, 100]."""
    value = float(value)
    percent = value * 100 if value <= 1 else value
    low_ok = percent >= 0 if allow_zero else percent > 0
    if not (low_ok and percent <= 100) or abs(percent - round(percent)) > 1e-6:
        bounds = "[0, 1)" if allow_zero else "(0, 1]"
        raise ValueError(f"{what} must be a fraction in {bounds} (or a whole percentage), got {value!r}")
    return int(round(percent))


def dataset_name(method: str, data_fraction: float = 1.0, flip_fraction: float = 0.0,
                 sft_source: str = "reference") -> str:
    """The folder name notebook 02 gives the training set: `dpo`, `dpo_images_50`, `dpo_flip_25`, `steerlm_images_75`,
    `rejection_sampling`, `sft` (reference answers) or `sft_judge` (judge-written answers)."""
    if method not in METHOD_SUFFIX:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHOD_SUFFIX)}")
    data = percent_of(data_fraction, "data_fraction")
    flip = percent_of(flip_fraction, "flip_fraction", allow_zero=True)
    if flip == 100:
        raise ValueError("flip_fraction 1.0 would swap every pair; the paper's ablation uses 0.25, 0.5 and 0.75")
    if flip and method != "dpo":
        raise ValueError(f"flip_fraction is a DPO ablation (chosen and rejected swapped); {method} has no pairs")
    if flip and data != 100:
        raise ValueError("notebook 02 saves the flipped sets on all the pairs only: use data_fraction 1.0 with "
                         f"flip_fraction {flip_fraction}")
    if method == "sft":
        if sft_source not in SFT_SOURCES:
            raise ValueError(f"sft_source must be one of {list(SFT_SOURCES)}, got {sft_source!r}")
        if data != 100:
            raise ValueError("notebook 02 saves no data-scaling subsets of the SFT set; use data_fraction 1.0")
        return SFT_SOURCES[sft_source]
    if flip:
        return f"dpo_flip_{flip}"
    return method if data == 100 else f"{method}_images_{data}"


def preference_dataset(ctx, name: str) -> Path:
    """The folder of notebook 02's training set `name` under <variant>/preference/ of the run's artifacts folder
    or, for a sweep run, of the sweep's root (RunContext.input_dirs); else a clear error."""
    found = ctx.find_input("preference", name, exists=is_saved_dataset)  # this run's folder, then a sweep's root
    if found is not None:
        return found
    path = Path(ctx.artifacts_dir) / ctx.variant / "preference" / name  # not shared_path: a lookup makes no folders
    root = path.parent
    saved = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if name == "sft_judge":
        hint = ("notebook 02 saves the SFT set with judge-written answers only when run with judge_answers=True and "
                "an AI judge (the ShapesWorld oracle rates answers but writes none): rerun it with e.g. "
                "`-p judge gemini -p judge_answers true`, or use sft_source='reference'.")
    elif saved:
        hint = (f"notebook 02 saved {', '.join(saved)} there; pick one of those settings, or rerun notebook 02 with "
                "this profile and smoke setting.")
    else:
        hint = (f"run notebook 02 first with the same profile, smoke setting and artifacts_dir "
                f"(`mmalign run 02{' --smoke' if ctx.smoke else ''} --artifacts-dir {ctx.artifacts_dir}`).")
    raise MissingDatasetError(f"training set {name!r} not found at {path}: {hint}")


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "+".join(_format_value(v) for v in value)
    return str(value).replace(",", "+")  # ',' separates the settings of a name


def aligned_model_name(ctx, method: str, **settings: Any) -> str:
    """`<mllm>-<sft|rs|steerlm|dpo>`, plus `@key=value,...` for the settings that differ from DEFAULT_SETTINGS
    (in the order given). Fractions are written as fractions (`data=0.5`, also when given as 50)."""
    if method not in METHOD_SUFFIX:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHOD_SUFFIX)}")
    parts = []
    for key, value in settings.items():
        if key in ("data", "flip"):
            value = percent_of(value, key, allow_zero=key == "flip") / 100
        if key in DEFAULT_SETTINGS and value == DEFAULT_SETTINGS[key]:
            continue
        if value is None or value == "" or value == {}:
            continue
        parts.append(f"{key}={_format_value(value)}")
    base = f"{ctx.spec.mllm}-{METHOD_SUFFIX[method]}"
    return base + ("@" + ",".join(parts) if parts else "")


def folder_name(model_name: str) -> str:
    """A model name as a single folder name (the paper profile's names hold a '/')."""
    return model_name.replace("/", "__")


def aligned_dir(ctx, model_name: str) -> Path:
    """<artifacts>/<variant>/aligned/<name>: the run's adapter/, merged/, recipe.yaml and outputs.json."""
    return Path(ctx.shared_path("aligned", folder_name(model_name)))


def parse_overrides(text: str) -> dict[str, str]:
    """Recipe overrides from a notebook parameter: "optim.epochs=1; lora.r=8" -> {"optim.epochs": "1", ...}.
    Separated by ';' so that list values keep their commas ("dpo.loss_type=sigmoid,sft")."""
    out: dict[str, str] = {}
    for part in (text or "").split(";"):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"recipe override {part!r} is not key=value (e.g. 'optim.epochs=1; lora.r=8')")
        key, value = part.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def alignment_recipe(ctx, method: str, model_name: str, train_data: str | Path, **overrides: Any):
    """The method's recipe for this run (recipe_for_run: profile, seed, smoke, starting model), training on
    `train_data` and saving under aligned_dir(ctx, model_name). `overrides` are dotted recipe keys."""
    from mmalign_utils.train.recipes import recipe_for_run

    return recipe_for_run(method, ctx, train_data=str(train_data), output_dir=str(aligned_dir(ctx, model_name)),
                          **overrides)


def data_preview(dataset, n: int = 3, width: int = 160) -> pd.DataFrame:
    """A few training rows as text: question, answer(s) and the judge's scores (DPO: chosen and rejected)."""
    def text(messages) -> str:
        parts = messages[-1]["content"]
        said = parts if isinstance(parts, str) else " ".join(p.get("text") or "" for p in parts)
        return said if len(said) <= width else said[:width] + " ..."

    columns = dataset.column_names
    records = []
    for row in dataset.select(range(min(n, len(dataset)))):
        record = {"question": row.get("question", "")}
        if "chosen" in columns:
            record.update(chosen=text(row["chosen"]), rejected=text(row["rejected"]),
                          chosen_quality=row.get("chosen_quality"), rejected_quality=row.get("rejected_quality"))
        else:
            record["answer"] = text(row["messages"])
            for key in ("quality", "attributes", "answer_source"):
                if key in columns:
                    record[key] = row[key]
        records.append(record)
    return pd.DataFrame(records)


TRAINING_LOG = "training_log.json"


def save_training_log(result) -> Path:
    """Keep the run's metrics and log history beside its adapter (output_dir/training_log.json), so a later run
    can plot the curves without training again."""
    path = Path(result.output_dir) / TRAINING_LOG
    path.write_text(json.dumps({"metrics": result.metrics, "log_history": result.log_history,
                                "parameters": result.parameters, "outputs": result.outputs}, indent=1, default=str))
    return path


def load_trained(ctx, model_name: str):
    """A finished run saved by an earlier notebook run (outputs.json + training_log.json), as a RunResult; None
    when the folder holds no finished run."""
    from mmalign_utils.train.peft_setup import RunResult

    folder = aligned_dir(ctx, model_name)
    log, outputs = folder / TRAINING_LOG, folder / "outputs.json"
    if not (log.is_file() and outputs.is_file()):
        return None
    data = json.loads(log.read_text())
    return RunResult(output_dir=str(folder), outputs=json.loads(outputs.read_text()), metrics=data["metrics"],
                     log_history=data["log_history"], parameters=data.get("parameters", {}))


def release(result) -> None:
    """Drop the trainer (and its model and optimiser) of a finished run; the saved folders stay."""
    result.trainer = None
    gc.collect()


# ------------------------------------------------------------------------------------------------------------
# Training curves

SFT_CURVES = ("loss", "mean_token_accuracy", "grad_norm", "learning_rate")
DPO_CURVES = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
              "logps/rejected")


def log_frame(log_history: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The trainer's per-step logs (TrainerState.log_history) as a table indexed by step; the run's final summary
    (train_loss, train_runtime, ...) is left out."""
    rows = [dict(entry) for entry in log_history if "loss" in entry and "train_loss" not in entry]
    if not rows:
        return pd.DataFrame(columns=["step"]).set_index("step")
    frame = pd.DataFrame(rows)
    return frame.set_index("step") if "step" in frame else frame


def _plot_series(ax, frame: pd.DataFrame, columns: Sequence[str], title: str, ylabel: str = "") -> None:
    drawn = False
    for column in columns:
        if column in frame and frame[column].notna().any():
            ax.plot(frame.index, frame[column], marker="o", markersize=3, label=column.split("/")[-1])
            drawn = True
    ax.set_title(title)
    ax.set_xlabel("step")
    if ylabel:
        ax.set_ylabel(ylabel)
    if len(columns) > 1 and drawn:
        ax.legend(fontsize=8)
    if not drawn:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)


def plot_sft_curves(log_history: Sequence[Mapping[str, Any]], title: str = ""):
    """Loss, token accuracy on the answers, gradient norm and learning rate per logged step."""
    import matplotlib.pyplot as plt

    frame = log_frame(log_history)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.5))
    for ax, column, label in zip(axes, SFT_CURVES, ("training loss (answer tokens)", "token accuracy (answers)",
                                                    "gradient norm", "learning rate (LoRA)")):
        _plot_series(ax, frame, [column], label)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_dpo_curves(log_history: Sequence[Mapping[str, Any]], title: str = ""):
    """TRL's DPO metrics per logged step: loss; implicit rewards beta*log(pi/ref) of chosen and rejected; their
    margin; the share of pairs whose chosen reward is higher; the summed log-probs of chosen and rejected."""
    import matplotlib.pyplot as plt

    frame = log_frame(log_history)
    fig, axes = plt.subplots(1, 5, figsize=(20, 3.5))
    _plot_series(axes[0], frame, ["loss"], "DPO loss (ln 2 = 0.693 at the start)")
    _plot_series(axes[1], frame, ["rewards/chosen", "rewards/rejected"], "implicit rewards")
    _plot_series(axes[2], frame, ["rewards/margins"], "reward margin (chosen - rejected)")
    _plot_series(axes[3], frame, ["rewards/accuracies"], "reward accuracy")
    _plot_series(axes[4], frame, ["logps/chosen", "logps/rejected"], "summed log-probs")
    for ax in axes[:3]:
        ax.axhline(0.0 if ax is not axes[0] else math.log(2), color="grey", lw=0.8, ls=":")
    axes[3].set_ylim(-0.05, 1.05)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_reference_logps(chosen: Sequence[float], rejected: Sequence[float], title: str = ""):
    """Summed reference log-probs of the chosen and rejected answers before training (the paper's box plot, §6.4):
    on-policy pairs start about equally likely, so DPO's signal is the judge's preference, not the model's."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].boxplot([list(chosen), list(rejected)], tick_labels=["chosen", "rejected"])
    axes[0].set_ylabel("summed log-prob under the starting model")
    axes[0].set_title("reference log-probs")
    diff = np.asarray(chosen, dtype=float) - np.asarray(rejected, dtype=float)
    axes[1].hist(diff, bins=min(30, max(5, len(diff) // 3)))
    axes[1].axvline(0, color="grey", ls=":")
    axes[1].set_xlabel("chosen - rejected")
    axes[1].set_title(f"per pair (chosen more likely in {np.mean(diff > 0):.0%})")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def rows_trained(recipe, n_rows: int) -> int:
    """How many rows a run trains on: the dataset, capped by max_train_samples and, in smoke mode, SMOKE_ROWS."""
    from mmalign_utils.train.recipes import SMOKE_ROWS

    cap = min(n_rows, recipe.max_train_samples or n_rows)
    return min(cap, SMOKE_ROWS) if recipe.smoke else cap


def training_rows(result, model_name: str, ctx, recipe, dataset: str, n_rows: int) -> list[ResultRow]:
    """The run's training measurements as results.csv rows (benchmark "training", split = the dataset's name, n =
    rows trained on): final train loss, runtime, steps, trainable parameters and, for DPO, the last logged reward
    metrics. `n_rows` is the dataset's length."""
    method = recipe.method
    metrics = dict(result.metrics)
    frame = log_frame(result.log_history)
    n_rows = rows_trained(recipe, n_rows)
    protocol = f"{method}; dataset {dataset}"

    def row(metric: str, value: float) -> ResultRow:
        return ResultRow(notebook=ctx.notebook, model=model_name, benchmark="training", split=dataset, metric=metric,
                         value=float(value), n=n_rows, seed=ctx.seed, profile=ctx.profile, protocol=protocol)

    rows = []
    for key, metric in (("train_loss", "train_loss"), ("train_runtime", "train_runtime_s")):
        if key in metrics:
            rows.append(row(metric, metrics[key]))
    if len(frame):
        rows.append(row("steps", float(frame.index.max())))
        if "loss" in frame:
            rows.append(row("final_logged_loss", frame["loss"].dropna().iloc[-1]))
    if result.parameters:
        rows.append(row("trainable_parameters", result.parameters.get("trainable", 0)))
    if method == "dpo":
        for column in DPO_CURVES[1:]:
            if column in frame and frame[column].notna().any():
                rows.append(row(f"final_{column.replace('/', '_')}", frame[column].dropna().iloc[-1]))
    return rows


# ------------------------------------------------------------------------------------------------------------
# SteerLM prompts through any code that renders a chat template


class SteeredProcessor:
    """A processor whose chat template appends the SteerLM attribute string to every user turn, exactly as in
    training (`preference.steerlm_question`). Everything else is the wrapped processor's, so the benchmark runner,
    option scoring and the text suite ask a SteerLM model its questions with the wanted attributes."""

    def __init__(self, processor, attributes: Mapping[str, int]):
        from mmalign_utils.train.steer import steer_attributes

        self._processor = processor
        self.attributes = steer_attributes(attributes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_processor"], name)

    def __call__(self, *args, **kwargs):
        return self._processor(*args, **kwargs)

    def steer_messages(self, messages: Sequence[Mapping[str, Any]]) -> list[dict]:
        from mmalign_utils.preference import steerlm_question

        out = []
        for message in messages:
            message = dict(message)
            if message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, str):
                    message["content"] = steerlm_question(content, self.attributes)
                else:
                    parts = [dict(p) for p in content]
                    texts = [i for i, p in enumerate(parts) if p.get("type") == "text"]
                    if texts:
                        last = parts[texts[-1]]
                        last["text"] = steerlm_question(last.get("text") or "", self.attributes)
                    else:
                        parts.append({"type": "text", "text": steerlm_question("", self.attributes)})
                    message["content"] = parts
            out.append(message)
        return out

    def apply_chat_template(self, conversation, *args, **kwargs):
        return self._processor.apply_chat_template(self.steer_messages(conversation), *args, **kwargs)


def parse_attributes(text: str | Mapping[str, int]) -> dict[str, int]:
    """SteerLM attributes from "helpfulness:4,correctness:4,..." (the paper's string; '=' also accepted, missing
    attributes default to 4) or a mapping; checked to be integers 0-4."""
    from mmalign_utils.preference import ALL_FOURS
    from mmalign_utils.train.steer import steer_attributes

    if isinstance(text, Mapping):
        return steer_attributes(ALL_FOURS, **dict(text))
    values: dict[str, int] = {}
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        sep = ":" if ":" in part else "="
        if sep not in part:
            raise ValueError(f"SteerLM attribute {part!r} is not name:value (e.g. 'verbosity:2')")
        name, value = (s.strip() for s in part.split(sep, 1))
        try:
            values[name.lower()] = int(value)
        except ValueError:
            raise ValueError(f"SteerLM attribute {name!r}: {value!r} is not an integer 0-4") from None
    return steer_attributes(ALL_FOURS, **values)


# ------------------------------------------------------------------------------------------------------------
# Evaluation: the text suite and the offline ShapesWorld editions


def visual_editions() -> tuple[str, ...]:
    """The offline ShapesWorld editions except the text suite (answered separately, with notebook 01's settings)."""
    from mmalign_utils.bench.shapes.editions import OFFLINE_EDITIONS

    return tuple(name for name in OFFLINE_EDITIONS if name != "textsuite")


@dataclass
class EvalSettings:
    """How an aligned model is evaluated. The text-suite settings are notebook 01's (all held-out prompts, 200 new
    tokens; smoke: 8 prompts, 32 tokens), so its rows compare with the base LLM's and the MLLM's there."""

    text_prompts: int | None = None  # first n held-out text-suite prompts; None: all
    text_max_new_tokens: int = 200
    n_per_split: int | None = None  # per ShapesWorld edition; None: each edition's default (EDITIONS[...].default_n)
    open_max_new_tokens: int = 256
    batch_size: int = 16
    editions: tuple[str, ...] = field(default_factory=visual_editions)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def eval_settings(ctx, n_per_split: int | None = None) -> EvalSettings:
    """The profile's evaluation sizes: smoke mode answers 8 text prompts (32 tokens) and 2 items per edition split
    (32 tokens for open answers); otherwise all held-out prompts and `n_per_split` (None: the editions' defaults)."""
    if ctx.smoke:
        return EvalSettings(text_prompts=8, text_max_new_tokens=32, n_per_split=n_per_split or 2,
                            open_max_new_tokens=32)
    return EvalSettings(n_per_split=n_per_split)


def eval_dir(ctx, model_name: str) -> Path:
    """Where a model's answers are kept: <variant>/eval/<name>/ (text_suite.csv, answers.json, settings.json)."""
    path = Path(ctx.shared_path("eval", folder_name(model_name), "settings.json")).parent
    path.mkdir(parents=True, exist_ok=True)
    return path


def evaluate_aligned(ctx, model, processor, name: str, settings: EvalSettings | None = None,
                     steer: Mapping[str, int] | None = None, progress: bool = True,
                     model_path: str | Path | None = None) -> list[ResultRow]:
    """Answer the held-out text suite and the offline ShapesWorld editions; return their results.csv rows.

    Text suite (greedy, notebook 01's way): rows benchmark "text-suite", split "text" (prompt/instruction strict
    and loose accuracy, topic coverage, mean words, scene talk, empty share), and the same answers scored as the
    "textsuite" edition (split "heldout", the Table 4 column). Visual: every offline ShapesWorld edition through
    `bench.shapes.runner.evaluate` (closed questions by option scoring, open ones greedy, the oracle as judge).
    `steer` asks every question with these SteerLM attributes (SteeredProcessor). The answers are saved under
    eval_dir(ctx, name), the text-suite table also where notebook 07 reads it (report.save_text_per_prompt); the
    rows are returned, not appended (the notebook appends them).

    With `model_path` (the folder `model` was loaded from) the rows are also cached under eval_dir, keyed by the
    settings, seed, SteerLM attributes and the weights' content (`weights_digest`): rerunning a finished notebook
    reads them back instead of answering everything again.
    """
    from mmalign_utils import degradation as deg
    from mmalign_utils.bench.shapes.editions import get_edition
    from mmalign_utils.bench.shapes.runner import evaluate, to_result_rows
    from mmalign_utils.report import save_text_per_prompt
    from mmalign_utils.textsuite import load_text_suite

    settings = settings or eval_settings(ctx)
    cache = None
    if model_path is not None:
        key = f"{settings.key()}|{ctx.seed}|{sorted((steer or {}).items())}|{weights_digest(model_path)}"
        cache = eval_dir(ctx, name) / f"aligned-rows-{hashlib.sha256(key.encode()).hexdigest()[:12]}.csv"
        if cache.is_file():
            print(f"[mmalign] {name}: reusing its evaluation from {cache} (the same weights, settings and seed)")
            return _rows_from_frame(pd.read_csv(cache))
    if steer is not None:
        processor = SteeredProcessor(processor, steer)
    prompts = load_text_suite("heldout")
    if settings.text_prompts is not None:
        prompts = prompts[:settings.text_prompts]
    answers = deg.answer_text_suite(model, processor, prompts, max_new_tokens=settings.text_max_new_tokens,
                                    batch_size=settings.batch_size, desc=f"text suite ({name})" if progress else False)
    per_prompt = deg.score_condition(prompts, answers, name, tokenizer=getattr(processor, "tokenizer", processor))
    rows = deg.result_rows(deg.summarize(per_prompt, seed=ctx.seed), {name: name}, ctx.notebook, ctx.seed,
                           ctx.profile)

    textsuite = get_edition("textsuite")
    items = textsuite.build(settings.text_prompts, ctx.seed)
    text_score = textsuite.score(items, {p.id: a for p, a in zip(prompts, answers)})
    text_score["protocol"] += f"; greedy generation, up to {settings.text_max_new_tokens} new tokens"
    scores = evaluate(model, processor, editions=settings.editions, n_per_split=settings.n_per_split, seed=ctx.seed,
                      batch_size=settings.batch_size, open_max_new_tokens=settings.open_max_new_tokens,
                      progress=progress)
    if steer is not None:
        steer_text = ",".join(f"{k}:{v}" for k, v in processor.attributes.items())
        for result in (text_score, *scores.values()):
            result["protocol"] += f"; SteerLM attributes {steer_text}"
        for row in rows:
            row.protocol += f"; SteerLM attributes {steer_text}"
    rows += to_result_rows({"textsuite": text_score, **scores}, name, ctx.notebook, seed=ctx.seed, profile=ctx.profile)

    folder = eval_dir(ctx, name)
    per_prompt.to_csv(folder / "text_suite.csv", index=False)
    # notebook 07's length analysis reads every model's per-prompt answers from here
    save_text_per_prompt(per_prompt, ctx.artifacts_dir, name, ctx.seed, ctx.profile)
    saved = {edition: {str(k): v for k, v in result["answers"].items()} for edition, result in scores.items()}
    (folder / "answers.json").write_text(json.dumps(saved, indent=1, default=str))
    (folder / "settings.json").write_text(json.dumps({**asdict(settings), "steer": dict(steer or {})}, indent=1))
    if cache is not None:
        pd.DataFrame([asdict(r) for r in rows]).to_csv(cache, index=False)
    return rows


def _rows_from_frame(frame: pd.DataFrame) -> list[ResultRow]:
    rows = []
    for record in frame.to_dict("records"):
        record = {k: record.get(k) for k in RESULT_COLUMNS}
        for key in ("split", "protocol", "judge", "notebook", "model", "benchmark", "metric", "profile"):
            value = record.get(key)
            record[key] = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
        record["n"], record["seed"] = int(record["n"]), int(record["seed"])
        for key in ("value", "ci_low", "ci_high"):
            record[key] = float(record[key]) if record[key] is not None else math.nan
        rows.append(ResultRow(**record))
    return rows


def starting_model_rows(ctx, model_path: str | Path, settings: EvalSettings | None = None,
                        name: str | None = None, progress: bool = True) -> list[ResultRow]:
    """The starting MLLM evaluated like the aligned models (`evaluate_aligned`), once per artifacts directory,
    settings, seed and model build: the first call evaluates it and appends its rows to results.csv; later calls
    (other notebooks, reruns, sweep runs below that directory) read the cached rows and append nothing."""
    from mmalign_utils.models import load_mllm
    from mmalign_utils.results import append_results

    settings = settings or eval_settings(ctx)
    name = name or ctx.spec.mllm
    key = hashlib.sha256(f"{settings.key()}|{ctx.seed}|{folder_stamp(model_path)}".encode()).hexdigest()[:12]
    cache = eval_dir(ctx, name) / f"rows-{key}.csv"
    found = ctx.find_input("eval", folder_name(name), cache.name)  # a sweep run reuses its root's evaluation
    if found is not None:
        print(f"[mmalign] {name}: reusing its evaluation from {found}")
        return _rows_from_frame(pd.read_csv(found))
    model, processor = load_mllm(model_path, dtype=ctx.spec.torch_dtype, device=ctx.spec.device)
    rows = evaluate_aligned(ctx, model, processor, name, settings, progress=progress)
    del model
    gc.collect()
    pd.DataFrame([asdict(r) for r in rows]).to_csv(cache, index=False)
    append_results(ctx.results_csv, rows)
    return rows


# Headline numbers: (benchmark, split, metric, which way is better).
HEADLINES: tuple[tuple[str, str, str, str], ...] = (
    ("text-suite", "text", "prompt_strict_acc", "higher"),
    ("text-suite", "text", "instruction_strict_acc", "higher"),
    ("text-suite", "text", "topic_coverage", "higher"),
    ("text-suite", "text", "mean_words", "-"),
    ("shapes-pope", "all", "f1_mean", "higher"),
    ("shapes-mmbench", "all", "circular_acc", "higher"),
    ("shapes-objhal", "all", "CHAIRs_refine", "lower"),
    ("shapes-amber", "generative", "CHAIR", "lower"),
    ("shapes-llavabench", "all", "relative", "higher"),
    ("shapes-mmvet", "all", "total", "higher"),
    ("shapes-mmhal", "all", "average", "higher"),
)


def comparison_table(rows_by_model: Mapping[str, Sequence[ResultRow]], with_ci: bool = False) -> pd.DataFrame:
    """Headline numbers (HEADLINES) of each model side by side: index (benchmark, metric, better), one column per
    model; with_ci adds '<model> CI' columns as "[low, high]"."""
    records = []
    for benchmark, split, metric, better in HEADLINES:
        record: dict[str, Any] = {"benchmark": benchmark, "metric": metric, "better": better}
        for model, rows in rows_by_model.items():
            found = [r for r in rows if r.benchmark == benchmark and str(r.split) == split and r.metric == metric]
            record[model] = found[0].value if found else math.nan
            if with_ci:
                record[f"{model} CI"] = (f"[{found[0].ci_low:.3g}, {found[0].ci_high:.3g}]"
                                         if found and not math.isnan(found[0].ci_low) else "")
        records.append(record)
    return pd.DataFrame(records).set_index(["benchmark", "metric", "better"])


def plot_comparison(rows_by_model: Mapping[str, Sequence[ResultRow]], title: str = ""):
    """One small panel per headline number: a bar per model with its 95% bootstrap CI."""
    import matplotlib.pyplot as plt

    n = len(HEADLINES)
    cols = 4
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4 * cols, 2.8 * math.ceil(n / cols)))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    models = list(rows_by_model)
    for ax, (benchmark, split, metric, better) in zip(axes.flat, HEADLINES):
        for i, model in enumerate(models):
            found = [r for r in rows_by_model[model]
                     if r.benchmark == benchmark and str(r.split) == split and r.metric == metric]
            if not found:
                continue
            r = found[0]
            err = None
            if not (math.isnan(r.ci_low) or math.isnan(r.ci_high)):
                err = np.array([[max(r.value - r.ci_low, 0)], [max(r.ci_high - r.value, 0)]])
            ax.bar(i, r.value, yerr=err, capsize=3, color=colours[i % len(colours)], label=model)
            if math.isnan(r.value):
                ax.text(i, 0, "undefined", ha="center", va="bottom", fontsize=8)
        ax.set_xlim(-0.6, len(models) - 0.4)  # NaN bars would leave the limits undefined
        arrow = {"higher": " (higher is better)", "lower": " (lower is better)"}.get(better, "")
        ax.set_title(f"{benchmark}\n{metric}{arrow}", fontsize=9)
        ax.set_xticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower right", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def change_summary(start: Sequence[ResultRow], aligned: Sequence[ResultRow], start_name: str, name: str) -> str:
    """One sentence per headline number: the starting and aligned values, and whether their 95% CIs overlap
    (no claim beyond what the intervals support)."""
    lines = []
    for benchmark, split, metric, better in HEADLINES:
        a = [r for r in start if r.benchmark == benchmark and str(r.split) == split and r.metric == metric]
        b = [r for r in aligned if r.benchmark == benchmark and str(r.split) == split and r.metric == metric]
        if not (a and b):
            continue
        a, b = a[0], b[0]
        if math.isnan(a.value) or math.isnan(b.value):
            lines.append(f"{benchmark} {metric}: {start_name} {a.value:.3g}, {name} {b.value:.3g} (undefined on "
                         f"these {b.n} items, e.g. an F1 without positive answers)")
            continue
        direction = "up" if b.value > a.value else "down" if b.value < a.value else "unchanged"
        separated = not any(math.isnan(x) for x in (a.ci_low, a.ci_high, b.ci_low, b.ci_high)) and (
            b.ci_low > a.ci_high or b.ci_high < a.ci_low)
        verdict = ("95% CIs do not overlap" if separated else "within the CIs' overlap: not a measured change")
        if better in ("higher", "lower") and direction != "unchanged":
            good = (direction == "up") == (better == "higher")
            verdict += f"; {'better' if good else 'worse'} if real"
        lines.append(f"{benchmark} {metric}: {start_name} {a.value:.3g} -> {name} {b.value:.3g} ({direction}; "
                     f"{verdict}; n={b.n})")
    return "\n".join(lines)


def text_answers(ctx, model_names: Sequence[str], n: int = 4, width: int = 300) -> pd.DataFrame:
    """A few text-suite prompts with each model's saved answer side by side (from eval_dir(ctx, name))."""
    from mmalign_utils import degradation as deg

    frames = []
    for name in model_names:
        path = eval_dir(ctx, name) / "text_suite.csv"
        if path.is_file():
            frame = pd.read_csv(path, keep_default_na=False)
            frame["condition"] = name
            frames.append(frame)
    if not frames:
        return pd.DataFrame()
    return deg.side_by_side(pd.concat(frames, ignore_index=True), list(model_names), n=n, seed=ctx.seed, width=width)


# ------------------------------------------------------------------------------------------------------------
# SteerLM: the attribute sweep with scores


@dataclass
class SweepSet:
    """Items for an attribute sweep and the scorers that apply to them."""

    key: str  # short name for results.csv splits ("image", "text")
    name: str
    items: list  # steer.SteerItem
    scorers: dict[str, Callable[[Any, str], float]]


def image_sweep_set(n: int, seed: int) -> SweepSet:
    """Shapes-LLaVA-Bench questions (conversation, detail, reasoning) about held-out scenes, scored by the
    ShapesWorld oracle: the LLaVA-Bench score (1-10) and the HelpSteer attributes the SteerLM data was labelled
    with (so asked-for and judged verbosity can be compared)."""
    from mmalign_utils.bench.shapes.common import scene_image
    from mmalign_utils.bench.shapes.editions import get_edition
    from mmalign_utils.bench.shapes.oracle_review import llavabench_score, review_answer
    from mmalign_utils.judges.oracle import rate_answers
    from mmalign_utils.train.steer import SteerItem

    bench_items = get_edition("shapes-llavabench").build(max(1, math.ceil(n / 3)), seed)[:n]
    by_id = {str(it["id"]): it for it in bench_items}
    items = [SteerItem(it["question"], image=scene_image(it["scene"]), item_id=str(it["id"])) for it in bench_items]

    def llavabench(item, answer: str) -> float:
        bench = by_id[item.item_id]
        return float(llavabench_score(review_answer(bench["question"], answer, bench["oracle_item"])))

    def judged(attribute: str) -> Callable[[Any, str], float]:
        def score(item, answer: str) -> float:
            bench = by_id[item.item_id]
            return float(rate_answers(bench["question"], [answer], bench["oracle_item"])[0].scores[attribute])
        return score

    scorers = {"llavabench_score": llavabench, **{f"judged_{a}": judged(a) for a in
                                                   ("helpfulness", "correctness", "complexity", "verbosity")}}
    return SweepSet("image", "image questions (Shapes-LLaVA-Bench)", items, scorers)


def text_sweep_set(n: int) -> SweepSet:
    """Held-out text-suite prompts, scored by their checkers (strict: every instruction followed)."""
    from mmalign_utils.textsuite import load_text_suite
    from mmalign_utils.textsuite.suite import score_response
    from mmalign_utils.train.steer import SteerItem

    prompts = load_text_suite("heldout")[:n]
    by_id = {p.id: p for p in prompts}
    items = [SteerItem(p.prompt, item_id=p.id) for p in prompts]

    def strict(item, answer: str) -> float:
        return float(score_response(by_id[item.item_id], answer).strict)

    return SweepSet("text", "text instructions (text suite)", items, {"strict_pass": strict})


def sweep_rows(summary: pd.DataFrame, model_name: str, ctx, set_name: str, n_items: int) -> list[ResultRow]:
    """An attribute sweep's summary (steer.sweep_summary) as results.csv rows: benchmark "steerlm-sweep", split
    "<set>:<attribute>=<value>", one row per measure, and the Spearman rho of the value with answer length."""
    rows = []
    measures = [c for c in summary.columns if c not in ("attribute", "value", "spearman_words")]
    for record in summary.to_dict("records"):
        split = f"{set_name}:{record['attribute']}={int(record['value'])}"
        for measure in measures:
            if record[measure] is None or (isinstance(record[measure], float) and math.isnan(record[measure])):
                continue
            rows.append(ResultRow(notebook=ctx.notebook, model=model_name, benchmark="steerlm-sweep", split=split,
                                  metric=f"mean_{measure}", value=float(record[measure]), n=n_items, seed=ctx.seed,
                                  profile=ctx.profile, protocol="greedy; other attributes at 4", judge="oracle"))
    for attribute, group in summary.groupby("attribute", sort=False):
        rho = group["spearman_words"].iloc[0]
        if not (isinstance(rho, float) and math.isnan(rho)):
            rows.append(ResultRow(notebook=ctx.notebook, model=model_name, benchmark="steerlm-sweep",
                                  split=f"{set_name}:{attribute}", metric="spearman_value_vs_words",
                                  value=float(rho), n=n_items, seed=ctx.seed, profile=ctx.profile,
                                  protocol="greedy; other attributes at 4"))
    return rows


def plot_sweep(summaries: Mapping[str, pd.DataFrame], measures: Sequence[str] | None = None):
    """Mean answer length and scores against the asked-for value of verbosity and complexity (the others at 4):
    one row of panels per sweep set, one panel per measure (default: words and every scorer of the set), one line
    per swept attribute."""
    import matplotlib.pyplot as plt

    def measures_of(summary: pd.DataFrame) -> list[str]:
        if measures is not None:
            return [m for m in measures if m in summary and summary[m].notna().any()]
        skip = {"attribute", "value", "spearman_words", "tokens"}
        return [c for c in summary.columns if c not in skip and summary[c].notna().any()]

    panels = {name: measures_of(summary) for name, summary in summaries.items()}
    cols = max([len(p) for p in panels.values()] + [1])
    fig, axes = plt.subplots(len(panels), cols, figsize=(3.6 * cols, 3.2 * len(panels)), squeeze=False)
    for r, (set_name, names) in enumerate(panels.items()):
        summary = summaries[set_name]
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(names):
                ax.axis("off")
                continue
            for attribute, group in summary.groupby("attribute", sort=False):
                ax.plot(group["value"], group[names[c]], marker="o", label=attribute)
            ax.set_xlabel("asked-for value (others at 4)")
            ax.set_title(f"{set_name}\n{names[c]}", fontsize=9)
            ax.set_xticks(range(5))
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


__all__ = [
    "DEFAULT_SETTINGS", "DPO_CURVES", "EvalSettings", "HEADLINES", "METHOD_SUFFIX", "MissingDatasetError",
    "SFT_CURVES", "SteeredProcessor", "SweepSet", "TRAINING_LOG", "aligned_dir", "aligned_model_name",
    "alignment_recipe", "change_summary", "comparison_table", "data_preview", "dataset_name", "eval_dir",
    "eval_settings", "evaluate_aligned", "folder_name", "image_sweep_set", "load_trained", "log_frame",
    "parse_attributes", "parse_overrides", "percent_of", "plot_comparison", "plot_dpo_curves",
    "plot_reference_logps", "plot_sft_curves", "plot_sweep", "preference_dataset", "release", "rows_trained",
    "save_training_log", "starting_model_rows", "sweep_rows", "text_answers", "text_sweep_set", "training_rows",
    "visual_editions", "weights_digest",
]
