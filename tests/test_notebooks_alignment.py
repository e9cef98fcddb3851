"""Notebooks 03-06 (SFT, rejection sampling, DPO, SteerLM) and their helpers in mmalign_utils.alignment_report.

Fast: model names, dataset selection, parameter parsing, SteerLM prompts, training rows and comparisons, each
against values written out by hand. Slow: every notebook executed headless in smoke mode, as
`mmalign run 03 --smoke` does, on notebook 02's smoke datasets made in the same artifacts folder from an untrained
toy LLaVA (placed where ensure_toy_llava finds it, so no toy LLaVA is trained here).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mmalign_utils import alignment_report as ar
from mmalign_utils.config import RunContext
from mmalign_utils.results import ResultRow, read_results
from mmalign_utils.train.peft_setup import RunResult
from mmalign_utils.train.recipes import recipe_for_run

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALIGNMENT_NOTEBOOKS = ("03_sft", "04_rejection_sampling", "05_dpo", "06_steerlm")


@pytest.fixture
def ctx(tmp_path):
    return RunContext(profile="toy", smoke=True, seed=0, artifacts_dir=tmp_path, notebook="05_dpo")


# ------------------------------------------------------------------------------------------------ fast


def test_dataset_names_follow_notebook_02():
    assert ar.dataset_name("dpo") == "dpo"
    assert ar.dataset_name("dpo", data_fraction=0.5) == "dpo_images_50"
    assert ar.dataset_name("dpo", data_fraction=75) == "dpo_images_75"  # a percentage works too
    assert ar.dataset_name("dpo", flip_fraction=0.25) == "dpo_flip_25"
    assert ar.dataset_name("rejection_sampling", data_fraction=0.25) == "rejection_sampling_images_25"
    assert ar.dataset_name("steerlm") == "steerlm"
    assert ar.dataset_name("sft") == "sft"
    assert ar.dataset_name("sft", sft_source="judge") == "sft_judge"


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "steerlm", "flip_fraction": 0.25}, "DPO ablation"),
    ({"method": "dpo", "data_fraction": 0.5, "flip_fraction": 0.25}, "flipped sets on all the pairs"),
    ({"method": "dpo", "data_fraction": 0}, "data_fraction"),
    ({"method": "dpo", "data_fraction": 1.5}, "data_fraction"),
    ({"method": "dpo", "data_fraction": 0.333}, "whole percentage"),
    ({"method": "dpo", "flip_fraction": 1.0}, "every pair"),
    ({"method": "sft", "sft_source": "gemini"}, "sft_source"),
    ({"method": "sft", "data_fraction": 0.5}, "no data-scaling subsets"),
    ({"method": "ppo"}, "unknown method"),
])
def test_dataset_name_refuses_sets_notebook_02_does_not_make(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ar.dataset_name(**kwargs)


def test_model_names_carry_only_non_default_settings(ctx):
    assert ar.aligned_model_name(ctx, "dpo", data=1.0, flip=0.0, beta=0.1, loss="sigmoid", ref="cached") \
        == "toy-llava-dpo"
    assert ar.aligned_model_name(ctx, "dpo", data=50, flip=0) == "toy-llava-dpo@data=0.5"
    assert ar.aligned_model_name(ctx, "dpo", flip=0.25) == "toy-llava-dpo@flip=0.25"
    assert ar.aligned_model_name(ctx, "dpo", beta=0.3, loss="sigmoid,sft") \
        == "toy-llava-dpo@beta=0.3,loss=sigmoid+sft"
    assert ar.aligned_model_name(ctx, "rejection_sampling", data=0.25) == "toy-llava-rs@data=0.25"
    assert ar.aligned_model_name(ctx, "sft", source="reference") == "toy-llava-sft"
    assert ar.aligned_model_name(ctx, "steerlm", complexity=2, verbosity=2) \
        == "toy-llava-steerlm@complexity=2,verbosity=2"
    paper = RunContext(profile="paper", artifacts_dir=ctx.artifacts_dir)
    assert ar.aligned_model_name(paper, "dpo") == "llava-hf/llava-1.5-13b-hf-dpo"
    assert ar.aligned_dir(paper, "llava-hf/llava-1.5-13b-hf-dpo").name == "llava-hf__llava-1.5-13b-hf-dpo"


def test_single_ablation_names_parse_in_notebook_07(ctx):
    from mmalign_utils.bench.shapes.table import default_models
    from mmalign_utils.report import parse_ablation

    assert ar.aligned_model_name(ctx, "dpo") == default_models("toy")["DPO"]
    assert ar.aligned_model_name(ctx, "steerlm") == default_models("toy")["SteerLM"]
    assert ar.aligned_model_name(ctx, "rejection_sampling") == default_models("toy")["rejection sampling"]
    assert parse_ablation(ar.aligned_model_name(ctx, "dpo", data=0.75)) == ("toy-llava-dpo", "data", 0.75)
    assert parse_ablation(ar.aligned_model_name(ctx, "dpo", flip=50)) == ("toy-llava-dpo", "flip", 0.5)


def test_missing_dataset_says_to_run_notebook_02_and_creates_nothing(ctx, tmp_path):
    with pytest.raises(ar.MissingDatasetError, match="run notebook 02 first") as error:
        ar.preference_dataset(ctx, "dpo")
    assert "mmalign run 02 --smoke" in str(error.value)
    assert not (tmp_path / "toy-smoke" / "preference").exists()
    with pytest.raises(ar.MissingDatasetError, match="judge_answers=True and an AI judge"):
        ar.preference_dataset(ctx, "sft_judge")
    (tmp_path / "toy-smoke" / "preference" / "dpo").mkdir(parents=True)
    (tmp_path / "toy-smoke" / "preference" / "dpo" / "state.json").write_text("{}")
    assert ar.preference_dataset(ctx, "dpo") == tmp_path / "toy-smoke" / "preference" / "dpo"
    with pytest.raises(ar.MissingDatasetError, match="saved dpo there"):
        ar.preference_dataset(ctx, "dpo_images_50")


def test_recipe_points_at_the_data_and_the_aligned_folder(ctx, tmp_path):
    recipe = ar.alignment_recipe(ctx, "dpo", "toy-llava-dpo@beta=0.3", tmp_path / "data",
                                 **{"dpo.beta": 0.3, **ar.parse_overrides("optim.epochs=1; lora.r=8")})
    assert recipe.train_data == str(tmp_path / "data")
    assert recipe.output_dir == str(tmp_path / "toy-smoke" / "aligned" / "toy-llava-dpo@beta=0.3")
    assert recipe.model == str(tmp_path / "toy-smoke" / "toy_llava" / "model")
    assert (recipe.dpo.beta, recipe.optim.epochs, recipe.lora.r, recipe.smoke) == (0.3, 1.0, 8, True)
    assert ar.parse_overrides(" dpo.loss_type=sigmoid,sft ;dpo.loss_weights=1,0.5; ") == {
        "dpo.loss_type": "sigmoid,sft", "dpo.loss_weights": "1,0.5"}
    with pytest.raises(ValueError, match="key=value"):
        ar.parse_overrides("optim.epochs 1")


def test_steer_attributes_parse_with_fours_as_default():
    assert ar.parse_attributes("helpfulness:4,correctness:4,coherence:4,complexity:2,verbosity:2") == {
        "helpfulness": 4, "correctness": 4, "coherence": 4, "complexity": 2, "verbosity": 2}
    assert ar.parse_attributes("Verbosity=0") == {
        "helpfulness": 4, "correctness": 4, "coherence": 4, "complexity": 4, "verbosity": 0}
    with pytest.raises(ValueError):
        ar.parse_attributes("verbosity:5")
    with pytest.raises(ValueError, match="unknown"):
        ar.parse_attributes("humour:2")
    with pytest.raises(ValueError, match="integer"):
        ar.parse_attributes("verbosity:high")


class _RecordingProcessor:
    """Stands in for a processor: returns what it was asked to render."""

    tokenizer = "the tokenizer"

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=True):
        return messages

    def __call__(self, **kwargs):
        return ("encoded", kwargs)


def test_steered_processor_appends_the_training_string_to_user_turns():
    steered = ar.SteeredProcessor(_RecordingProcessor(), {"verbosity": 2, "complexity": 1, "helpfulness": 4,
                                                          "correctness": 4, "coherence": 4})
    suffix = "\nhelpfulness:4,correctness:4,coherence:4,complexity:1,verbosity:2"  # docs: question, newline, string
    text_only = [{"role": "user", "content": "Explain tides."}]
    with_image = [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]},
                  {"role": "assistant", "content": "A red circle."},
                  {"role": "user", "content": [{"type": "text", "text": "And its size?"}]}]
    assert steered.apply_chat_template(text_only, add_generation_prompt=True, tokenize=False) == [
        {"role": "user", "content": "Explain tides." + suffix}]
    rendered = steered.apply_chat_template(with_image)
    assert rendered[0] == {"role": "system", "content": "Be brief."}
    assert rendered[1]["content"] == [{"type": "image"}, {"type": "text", "text": "Describe it." + suffix}]
    assert rendered[2] == {"role": "assistant", "content": "A red circle."}
    assert rendered[3]["content"][0]["text"] == "And its size?" + suffix
    assert with_image[1]["content"][1]["text"] == "Describe it."  # the caller's messages are left alone
    assert steered.tokenizer == "the tokenizer" and steered(text="x") == ("encoded", {"text": "x"})


def test_steered_processor_matches_the_steerlm_training_rows():
    from PIL import Image

    from mmalign_utils.preference import AnnotatedPrompt, build_steerlm

    scores = {"helpfulness": 3, "correctness": 2, "coherence": 4, "complexity": 1, "verbosity": 0}
    prompt = AnnotatedPrompt("p0", image=Image.new("RGB", (8, 8)), question="Is there a star?", answers=["No."],
                             scores=[scores], image_id="scene-1")
    row = build_steerlm([prompt])[0]
    trained_text = [p["text"] for p in row["messages"][0]["content"] if p.get("type") == "text"][0]
    asked = ar.SteeredProcessor(_RecordingProcessor(), scores).apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a star?"}]}])
    assert asked[0]["content"][1]["text"] == trained_text


def _dpo_log() -> list[dict]:
    return [
        {"loss": 0.6931, "rewards/chosen": 0.0, "rewards/rejected": 0.0, "rewards/margins": 0.0,
         "rewards/accuracies": 0.0, "logps/chosen": -40.0, "logps/rejected": -60.0, "step": 1, "epoch": 0.5},
        {"loss": 0.60, "rewards/chosen": 0.2, "rewards/rejected": -0.3, "rewards/margins": 0.5,
         "rewards/accuracies": 0.75, "logps/chosen": -38.0, "logps/rejected": -63.0, "step": 2, "epoch": 1.0},
        {"train_runtime": 12.5, "train_loss": 0.6466, "step": 2, "epoch": 1.0},
    ]


def test_log_frame_and_training_rows_read_trl_logs(ctx):
    frame = ar.log_frame(_dpo_log())
    assert list(frame.index) == [1, 2] and "train_loss" not in frame
    result = RunResult(output_dir="x", metrics={"train_loss": 0.6466, "train_runtime": 12.5}, log_history=_dpo_log(),
                       parameters={"trainable": 1000})
    recipe = recipe_for_run("dpo", ctx)  # smoke: at most 8 rows are trained on
    rows = {r.metric: r for r in ar.training_rows(result, "toy-llava-dpo", ctx, recipe, "dpo", n_rows=20)}
    assert rows["train_loss"].value == pytest.approx(0.6466)
    assert rows["train_runtime_s"].value == 12.5
    assert rows["steps"].value == 2 and rows["final_logged_loss"].value == pytest.approx(0.60)
    assert rows["final_rewards_margins"].value == 0.5 and rows["final_rewards_accuracies"].value == 0.75
    assert rows["final_logps_rejected"].value == -63.0 and rows["trainable_parameters"].value == 1000
    assert {r.n for r in rows.values()} == {8} and {r.benchmark for r in rows.values()} == {"training"}
    full = recipe_for_run("dpo", RunContext(artifacts_dir=ctx.artifacts_dir))
    assert ar.rows_trained(full, 20) == 20


def test_curve_plots_draw_every_logged_metric():
    fig = ar.plot_dpo_curves(_dpo_log(), title="t")
    lines = {ax.get_title(): len(ax.get_lines()) for ax in fig.axes}
    assert lines["implicit rewards"] == 3  # chosen, rejected and the zero line
    assert lines["summed log-probs"] == 2
    fig = ar.plot_sft_curves([{"loss": 2.0, "mean_token_accuracy": 0.4, "step": 1}])
    assert any(text.get_text() == "not logged" for ax in fig.axes for text in ax.texts)  # grad norm, learning rate


def _row(model: str, benchmark: str, split: str, metric: str, value: float, low: float, high: float) -> ResultRow:
    return ResultRow(notebook="t", model=model, benchmark=benchmark, split=split, metric=metric, value=value, n=10,
                     ci_low=low, ci_high=high)


def test_comparison_and_change_summary_judge_by_the_intervals():
    start = [_row("a", "text-suite", "text", "prompt_strict_acc", 0.2, 0.1, 0.3),
             _row("a", "shapes-pope", "all", "f1_mean", 0.5, 0.4, 0.6),
             _row("a", "shapes-objhal", "all", "CHAIRs_refine", 0.4, 0.3, 0.5)]
    after = [_row("b", "text-suite", "text", "prompt_strict_acc", 0.6, 0.5, 0.7),
             _row("b", "shapes-pope", "all", "f1_mean", 0.45, 0.35, 0.55),
             _row("b", "shapes-objhal", "all", "CHAIRs_refine", math.nan, math.nan, math.nan)]
    table = ar.comparison_table({"a": start, "b": after})
    assert table.loc[("text-suite", "prompt_strict_acc", "higher"), "b"] == 0.6
    assert math.isnan(table.loc[("shapes-mmvet", "total", "higher"), "a"])
    lines = ar.change_summary(start, after, "a", "b").splitlines()
    assert lines[0].startswith("text-suite prompt_strict_acc: a 0.2 -> b 0.6 (up; 95% CIs do not overlap; better")
    assert "down; within the CIs' overlap" in lines[1] and "worse if real" in lines[1]
    assert "undefined" in lines[2]


def test_notebooks_have_parameters_first_and_no_outputs():
    expected = {
        "03_sft": ("sft_source",),
        "04_rejection_sampling": ("data_fraction",),
        "05_dpo": ("beta", "loss_type", "data_fraction", "flip_fraction", "reference"),
        "06_steerlm": ("data_fraction", "steer_attributes", "sweep_n"),
    }
    for stem, names in expected.items():
        nb = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text())
        first = nb["cells"][0]
        assert "parameters" in first["metadata"].get("tags", []), stem
        source = "\n" + "".join(first["source"])
        for name in ("profile", "smoke", "seed", "artifacts_dir", "recipe_overrides", "eval_n", *names):
            assert f"\n{name} =" in source, (stem, name)
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and not c.get("execution_count") for c in code), stem
        assert any("evaluate_aligned" in "".join(c["source"]) for c in code), stem


# ------------------------------------------------------------------------------------------------ slow


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Notebook 02's smoke outputs from an untrained toy LLaVA placed where ensure_toy_llava looks for it."""
    import torch

    from mmalign_utils.cli import main
    from mmalign_utils.models import build_toy_mllm, save_mllm

    root = tmp_path_factory.mktemp("alignment_notebooks")
    toy = root / "toy-smoke" / "toy_llava"
    model, processor = build_toy_mllm(dtype=torch.bfloat16)
    save_mllm(model, processor, toy / "model")
    del model
    (toy / "report.json").write_text(json.dumps({"note": "untrained toy LLaVA placed by the alignment tests"}))
    assert main(["run", "02", "--smoke", "--artifacts-dir", str(root)]) == 0
    return root


def _run(artifacts: Path, notebook: str, *params: str) -> None:
    from mmalign_utils.cli import main

    args = ["run", notebook, "--smoke", "--artifacts-dir", str(artifacts)]
    for i in range(0, len(params), 2):
        args += ["-p", params[i], params[i + 1]]
    assert main(args) == 0


def _rows(artifacts: Path, notebook: str):
    results = read_results(artifacts / "results.csv")
    return results[results.notebook == notebook]


def _check_saved(artifacts: Path, folder: str) -> Path:
    run = artifacts / "toy-smoke" / "aligned" / folder
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert (run / "merged" / "config.json").is_file() and (run / "training_log.json").is_file()
    return run


VISUAL = {"shapes-pope", "shapes-mmbench", "shapes-objhal", "shapes-amber", "shapes-llavabench", "shapes-mmvet",
          "shapes-mmhal"}


@pytest.mark.slow
def test_notebook03_sft_smoke(artifacts):
    _run(artifacts, "03")
    rows = _rows(artifacts, "03_sft")
    mine = rows[rows.model == "toy-llava-sft"]
    assert {"text-suite", "textsuite", "training"} | VISUAL <= set(mine.benchmark)
    assert (mine[mine.benchmark == "text-suite"].n == 8).all()
    # the starting model is evaluated once, with the same settings, the first time a notebook needs it
    assert {"text-suite", "textsuite"} | VISUAL <= set(rows[rows.model == "toy-llava"].benchmark)
    _check_saved(artifacts, "toy-llava-sft")
    assert (artifacts / "figures" / "03_sft_toy-llava-sft_curves.png").stat().st_size > 10_000
    assert (artifacts / "textsuite_per_prompt" / "toy-llava-sft__seed0.csv").is_file()


@pytest.mark.slow
def test_notebook04_rejection_sampling_on_a_data_subset(artifacts):
    _run(artifacts, "04", "data_fraction", "0.5")
    rows = _rows(artifacts, "04_rejection_sampling")
    assert "toy-llava-rs@data=0.5" in set(rows.model) and set(rows.model) <= {"toy-llava-rs@data=0.5", "toy-llava"}
    training = rows[rows.benchmark == "training"]
    assert set(training.split) == {"rejection_sampling_images_50"}
    _check_saved(artifacts, "toy-llava-rs@data=0.5")


@pytest.mark.slow
def test_notebook05_dpo_with_flipped_pairs(artifacts):
    import torch
    from transformers import AutoModelForImageTextToText

    _run(artifacts, "05", "flip_fraction", "0.25")
    rows = _rows(artifacts, "05_dpo")
    name = "toy-llava-dpo@flip=0.25"
    assert name in set(rows.model) and set(rows.model) <= {name, "toy-llava"}
    metrics = set(rows[rows.benchmark == "training"].metric)
    assert {"final_rewards_margins", "final_rewards_accuracies", "final_logps_chosen", "train_loss"} <= metrics
    run = _check_saved(artifacts, name)
    merged = AutoModelForImageTextToText.from_pretrained(run / "merged", dtype=torch.float32)
    start = AutoModelForImageTextToText.from_pretrained(artifacts / "toy-smoke" / "toy_llava" / "model",
                                                        dtype=torch.float32)
    changed = [n for n, p in merged.named_parameters() if not torch.equal(p, dict(start.named_parameters())[n])]
    assert changed and all("vision_tower" not in n for n in changed)  # LoRA merged in; the tower stays frozen
    assert (artifacts / "figures" / f"05_dpo_{name}_curves.png").is_file()


@pytest.mark.slow
def test_notebook06_steerlm_with_inference_attributes_and_sweep(artifacts):
    _run(artifacts, "06", "steer_attributes", "verbosity:2")
    rows = _rows(artifacts, "06_steerlm")
    steered = rows[rows.model == "toy-llava-steerlm@verbosity=2"]
    assert VISUAL <= set(steered.benchmark)
    assert steered.protocol.str.contains("verbosity:2").all()
    sweep = rows[(rows.model == "toy-llava-steerlm") & (rows.benchmark == "steerlm-sweep")]
    splits = set(sweep.split)
    assert {f"{s}:{a}={v}" for s in ("image", "text") for a in ("verbosity", "complexity") for v in range(5)} <= splits
    assert {"mean_words", "mean_llavabench_score", "mean_judged_verbosity", "mean_strict_pass"} <= set(sweep.metric)
    assert set(rows[rows.benchmark == "training"].model) == {"toy-llava-steerlm"}
    _check_saved(artifacts, "toy-llava-steerlm")
