"""Alignment recipes: paper defaults, YAML files, LoRA targets, 2-step smoke runs of every method (trainable
weights change, frozen ones do not), projector learning rate, resume, saving, dry run and launcher."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from mmalign_utils import preference
from mmalign_utils.train.recipes import (
    METHODS, RecipeError, default_recipe, dump_recipe, load_recipe, recipe_from_dict, smoke_settings,
)
from mmalign_utils.train.tiny import build_tiny_llava, synthetic_prompts

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ recipes

def test_paper_defaults_are_the_papers_numbers():
    dpo = default_recipe("dpo", "paper")
    assert (dpo.dpo.loss_type, dpo.dpo.beta, dpo.dpo.reference) == ("sigmoid", 0.1, "cached")
    assert (dpo.optim.learning_rate, dpo.optim.projector_learning_rate, dpo.optim.epochs) == (5e-5, 2e-5, 3)
    assert (dpo.optim.per_device_batch_size, dpo.optim.gradient_accumulation_steps) == (8, 4)
    assert dpo.optim.max_length == 3000
    assert (dpo.lora.r, dpo.lora.alpha, dpo.lora.dropout) == (128, 256, 0.05)
    assert (dpo.optim.lr_scheduler, dpo.optim.warmup_ratio, dpo.optim.weight_decay) == ("cosine", 0.03, 0.0)
    for method in ("sft", "rejection_sampling", "steerlm"):
        sft = default_recipe(method, "paper")
        assert (sft.optim.learning_rate, sft.optim.projector_learning_rate, sft.optim.epochs) == (4e-4, 2e-5, 3)
        assert (sft.optim.per_device_batch_size, sft.optim.gradient_accumulation_steps) == (16, 2)
        assert (sft.optim.lr_scheduler, sft.optim.warmup_ratio, sft.optim.weight_decay) == ("cosine", 0.03, 0.0)
        assert sft.optim.max_length == 2048 and sft.hardware.precision == "bf16"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("profile", ["toy", "paper"])
def test_shipped_yaml_recipes_load_and_equal_the_defaults(method, profile):
    recipe = load_recipe(REPO / "recipes" / f"{method}_{profile}.yaml")
    assert recipe == default_recipe(method, profile)


def test_yaml_round_trip_and_dotted_overrides(tmp_path):
    recipe = load_recipe(REPO / "recipes/dpo_toy.yaml",
                         {"lora.r": "8", "optim.learning_rate": "1e-4", "dpo.loss_type": "sigmoid,sft",
                          "dpo.loss_weights": "1,0.5", "hardware.precision": "fp32"})
    assert recipe.lora.r == 8 and recipe.optim.learning_rate == 1e-4
    assert recipe.dpo.loss_type == ["sigmoid", "sft"] and recipe.dpo.loss_weights == [1.0, 0.5]
    path = tmp_path / "r.yaml"
    dump_recipe(recipe, path)
    assert load_recipe(path) == recipe


def test_recipe_for_a_notebook_run_context(tmp_path):
    from mmalign_utils.config import RunContext
    from mmalign_utils.train.recipes import recipe_for_run

    ctx = RunContext(profile="toy", smoke=True, seed=3, artifacts_dir=tmp_path)
    recipe = recipe_for_run("steerlm", ctx, **{"lora.r": 8})
    assert (recipe.method, recipe.profile, recipe.seed, recipe.smoke, recipe.lora.r) == ("steerlm", "toy", 3, True, 8)
    assert recipe.model == str(tmp_path / "toy-smoke" / "toy_llava" / "model")
    assert recipe.train_data == str(tmp_path / "toy-smoke" / "preference" / "steerlm")
    assert recipe.output_dir == str(tmp_path / "toy-smoke" / "runs" / "steerlm")
    paper = recipe_for_run("dpo", RunContext(profile="paper", artifacts_dir=tmp_path))
    assert paper.model == "llava-hf/llava-1.5-13b-hf" and paper.lora.r == 128


def test_bad_keys_and_combinations_are_named():
    with pytest.raises(RecipeError, match=r"lora: unknown key\(s\) \['rank'\]"):
        recipe_from_dict({"lora": {"rank": 4}})
    with pytest.raises(RecipeError, match="dpo.loss_type"):
        recipe_from_dict({"dpo": {"loss_type": "nope"}})
    with pytest.raises(RecipeError, match="reference drift|drift"):
        recipe_from_dict({"lora": {"projector": "outside"}, "dpo": {"reference": "lora"}})
    # the same projector layout is fine with a cached reference, and for SFT (no reference at all)
    recipe_from_dict({"lora": {"projector": "outside"}, "dpo": {"reference": "cached"}})
    recipe_from_dict({"method": "sft", "lora": {"projector": "outside"}, "dpo": {"reference": "lora"}})


@pytest.mark.parametrize("forced, bf16", [("bf16", True), ("fp32", False)])
def test_cpu_precision_auto_follows_the_cpu_dtype_with_use_cpu(monkeypatch, forced, bf16):
    from mmalign_utils.train import peft_setup

    monkeypatch.setattr(peft_setup, "has_cuda", lambda: False)
    monkeypatch.setenv("MMALIGN_CPU_DTYPE", forced)
    auto = default_recipe("dpo", "toy")
    assert peft_setup.resolve_precision(auto) == {"bf16": bf16, "fp16": False, "use_cpu": True}
    assert peft_setup.resolve_weights_dtype(auto) == (torch.bfloat16 if bf16 else torch.float32)
    fp32 = recipe_from_dict({"hardware": {"precision": "fp32"}})
    assert peft_setup.resolve_precision(fp32)["bf16"] is False
    assert peft_setup.resolve_weights_dtype(fp32) == torch.float32


# ------------------------------------------------------------------------------------------------ LoRA targets

def test_lora_covers_every_language_model_linear_and_nothing_else():
    from peft import get_peft_model

    from mmalign_utils.train.peft_setup import build_lora_config

    model, _ = build_tiny_llava()
    peft_model = get_peft_model(model, build_lora_config(model, default_recipe("dpo", "toy")))
    adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in peft_model.named_parameters() if ".lora_A." in name}
    n_layers = model.config.text_config.num_hidden_layers
    expected = {f"base_model.model.model.language_model.layers.{i}.{m}" for i in range(n_layers)
                for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    assert adapted == expected
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert not any("vision_tower" in n or "lm_head" in n or "embed_tokens" in n for n in trainable)
    assert any("multi_modal_projector.modules_to_save" in n for n in trainable)


# ------------------------------------------------------------------------------------------------ smoke runs

def tiny_recipe(method: str, out: Path, **changes):
    recipe = smoke_settings(default_recipe(method, "toy"))
    # smoke_settings wrote the small sizes into the fields; smoke=False lets a test change them (max_steps)
    recipe = dataclasses.replace(recipe, output_dir=str(out), train_data=str(out / "data"), save_steps=1000,
                                 max_train_samples=None, smoke=False)
    recipe.lora = dataclasses.replace(recipe.lora, r=4, alpha=8, dropout=0.0)
    recipe.optim = dataclasses.replace(recipe.optim, learning_rate=5e-3, projector_learning_rate=1e-3)
    recipe.hardware = dataclasses.replace(recipe.hardware, precision="fp32")
    for section, values in changes.items():
        setattr(recipe, section, dataclasses.replace(getattr(recipe, section), **values)
                if isinstance(values, dict) else values)
    return recipe


def tiny_data(method: str, n: int = 6):
    prompts = synthetic_prompts(n)
    return {"dpo": preference.build_dpo_pairs, "sft": preference.build_sft,
            "rejection_sampling": preference.build_rejection_sampling,
            "steerlm": preference.build_steerlm}[method](prompts)


def base_name(peft_name: str) -> str:
    """The starting model's name of a weight inside the PEFT wrapper (None for LoRA and the trained copy)."""
    name = peft_name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".").replace(".original_module.", ".")


def build_trainer(method, recipe, model, processor, dataset):
    if method == "dpo":
        from mmalign_utils.train.dpo import build_dpo_trainer, prepare_dpo_dataset

        data = prepare_dpo_dataset(recipe, dataset, model, processor, progress=False)
        return build_dpo_trainer(recipe, model, processor, data, disable_tqdm=True)
    from mmalign_utils.train.sft import build_sft_trainer

    return build_sft_trainer(recipe, model, processor, dataset, disable_tqdm=True)


@pytest.mark.parametrize("method,reference", [("sft", None), ("rejection_sampling", None), ("steerlm", None),
                                              ("dpo", "cached"), ("dpo", "lora")])
def test_two_steps_change_lora_and_projector_and_nothing_frozen(tmp_path, method, reference):
    changes = {"dpo": {"reference": reference}} if reference else {}
    recipe = tiny_recipe(method, tmp_path, **changes)
    model, processor = build_tiny_llava()
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = build_trainer(method, recipe, model, processor, tiny_data(method))
    trainer.train()
    assert trainer.state.global_step == 2
    changed_projector = 0
    for name, param in trainer.model.named_parameters():
        if "lora_" in name:
            assert param.requires_grad, name
            continue
        if ".modules_to_save." in name:
            original = start[base_name(name.replace(".modules_to_save.default.", "."))]
            assert param.requires_grad and not torch.equal(param.detach(), original), f"{name} did not train"
            changed_projector += 1
            continue
        assert not param.requires_grad, f"{name} should be frozen"
        assert torch.equal(param.detach(), start[base_name(name)]), f"frozen weight {name} changed"
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: it moved
    assert changed_projector == 4  # two linear layers, weight and bias


@pytest.mark.parametrize("method", ["dpo", "sft"])
def test_training_speedups_store_dpo_activations_in_bf16_under_fp32_compute(tmp_path, monkeypatch, method):
    """What train_and_save wraps every recipe in: on a CPU with fp32 compute, DPO keeps the activations saved for
    the backward in bf16 and still trains; the SFT-style recipes (TRL's fused LM head) keep them as computed."""
    from mmalign_utils.train import saved_activations
    from mmalign_utils.train.peft_setup import training_speedups

    monkeypatch.setattr(saved_activations, "MIN_NUMEL", 1)  # the tiny model's activations are all small
    recipe = tiny_recipe(method, tmp_path)
    model, processor = build_tiny_llava()
    trainer = build_trainer(method, recipe, model, processor, tiny_data(method))
    with training_speedups(trainer, recipe.hardware.saved_activations) as storage:
        trainer.train()
    assert trainer.state.global_step == 2
    assert all(p.abs().sum() > 0 for n, p in trainer.model.named_parameters() if "lora_B" in n)
    if method == "dpo":
        assert storage is not None and storage.converted > 0 and storage.fp32_bytes > 0
    else:
        assert storage is None


def test_projector_gets_its_own_learning_rate(tmp_path):
    recipe = tiny_recipe("sft", tmp_path)
    model, processor = build_tiny_llava()
    projector_size = sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    trainer = build_trainer("sft", recipe, model, processor, tiny_data("sft", 2))
    optimizer = trainer.create_optimizer()
    by_group = {g["group"]: g for g in optimizer.param_groups}
    assert by_group["lora"]["lr"] == 5e-3
    assert by_group["projector"]["lr"] == by_group["projector_no_decay"]["lr"] == 1e-3
    projector_params = sum(p.numel() for g in optimizer.param_groups if g["group"].startswith("projector")
                           for p in g["params"])
    assert projector_params == projector_size  # the trainable copy; the original stays frozen


class OrderRecorder:
    """Wraps a collator and records the questions of every batch it builds."""

    def __init__(self, collator):
        self.collator, self.batches = collator, []

    def __call__(self, examples):
        self.batches.append([e["prompt"][0]["content"][-1]["text"] for e in examples])
        return self.collator(examples)


def crash_at(step: int):
    """A TrainerCallback that kills the run at `step`, as a closed session does."""
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise KeyboardInterrupt(f"crash at step {step}")

    return Crash()


def test_a_rerun_of_the_same_recipe_goes_on_from_its_checkpoint(tmp_path, capsys):
    # resume_from_checkpoint "auto" (the default): a notebook rerun after a crash continues where it stopped;
    # another recipe in the same folder starts afresh and does not resume from the first one's checkpoints.
    from mmalign_utils.train.peft_setup import RUN_RECIPE_FILE, train_and_save

    dataset = tiny_data("dpo", 5)
    recipe = tiny_recipe("dpo", tmp_path / "run")
    recipe = dataclasses.replace(recipe, save_steps=2, save_total_limit=None)
    recipe.optim = dataclasses.replace(recipe.optim, max_steps=5)
    assert recipe.resume_from_checkpoint == "auto"

    model, processor = build_tiny_llava()
    crashing = build_trainer("dpo", recipe, model, processor, dataset)
    crashing.add_callback(crash_at(3))
    with pytest.raises(KeyboardInterrupt):
        train_and_save(crashing, processor, recipe, save=False)
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-2"]
    assert (tmp_path / "run" / RUN_RECIPE_FILE).is_file()

    model, processor = build_tiny_llava()
    rerun = build_trainer("dpo", recipe, model, processor, dataset)
    result = train_and_save(rerun, processor, recipe, save=False)
    assert f"resuming from {tmp_path / 'run' / 'checkpoint-2'}" in capsys.readouterr().out
    assert rerun.state.global_step == 5
    logged = {h["step"]: h["loss"] for h in result.log_history if "loss" in h and "train_loss" not in h}
    assert list(logged) == [1, 2, 3, 4, 5]  # 1-2 from the checkpoint's trainer state
    # the whole run's mean loss, not the Trainer's mean over the 3 steps trained in this sitting
    assert result.metrics["train_loss"] == pytest.approx(sum(logged.values()) / 5)
    assert result.metrics["resumed_from"] == str(tmp_path / "run" / "checkpoint-2")

    left = sorted((p.name for p in (tmp_path / "run").glob("checkpoint-*")), key=lambda n: int(n.split("-")[1]))
    assert left[:2] == ["checkpoint-2", "checkpoint-4"]
    other = dataclasses.replace(recipe, seed=recipe.seed + 1)
    model, processor = build_tiny_llava()
    fresh = build_trainer("dpo", other, model, processor, dataset)
    train_and_save(fresh, processor, other, save=False)
    out = capsys.readouterr().out
    assert "[mmalign] resuming from" not in out
    assert f"removed {len(left)} checkpoint(s) of an earlier run ({', '.join(left)})" in out
    assert fresh.state.global_step == 5


def test_logged_mean_loss_weights_each_logging_window_by_its_steps():
    from mmalign_utils.train.peft_setup import logged_mean_loss

    history = [{"loss": 1.0, "step": 5}, {"loss": 0.5, "step": 10}, {"loss": 0.2, "step": 12},
               {"eval_loss": 9.0, "step": 12}, {"train_loss": 0.7, "step": 12}]
    assert logged_mean_loss(history) == pytest.approx((1.0 * 5 + 0.5 * 5 + 0.2 * 2) / 12)
    assert math.isnan(logged_mean_loss([{"train_loss": 0.7, "step": 3}]))  # nothing logged per step


def test_auto_resume_needs_the_same_recipe_model_and_data(tmp_path):
    from mmalign_utils.train.peft_setup import checkpoint_to_resume, mark_run

    data = tmp_path / "data"
    data.mkdir()
    (data / "state.json").write_text('{"_fingerprint": "a"}')
    recipe = dataclasses.replace(tiny_recipe("dpo", tmp_path / "run"), train_data=str(data))
    assert checkpoint_to_resume(recipe) is None  # nothing there yet
    (tmp_path / "run" / "checkpoint-4").mkdir(parents=True)
    assert checkpoint_to_resume(recipe) is None  # checkpoints of unknown origin are not resumed
    mark_run(recipe, resuming=None)
    assert not (tmp_path / "run" / "checkpoint-4").exists()  # removed: not this recipe's
    for step in (2, 10):
        (tmp_path / "run" / f"checkpoint-{step}").mkdir()
    assert checkpoint_to_resume(recipe) == str(tmp_path / "run" / "checkpoint-10")  # the newest step, not "2" > "10"
    assert checkpoint_to_resume(dataclasses.replace(recipe, resume_from_checkpoint=None)) is None
    changed = dataclasses.replace(recipe, dpo=dataclasses.replace(recipe.dpo, beta=0.5))
    assert checkpoint_to_resume(changed) is None
    (data / "state.json").write_text('{"_fingerprint": "rewritten by another notebook 02 run"}')
    assert checkpoint_to_resume(recipe) is None


def test_resume_continues_at_the_right_step_with_the_same_data_order(tmp_path):
    # 5 pairs, batch 2: 3 steps per epoch, so the run crosses an epoch boundary after the checkpoint at step 2.
    # LoRA dropout on: the resumed run must also restore the random state.
    dataset = tiny_data("dpo", 5)
    recipe = tiny_recipe("dpo", tmp_path / "full", lora={"dropout": 0.1})
    recipe = dataclasses.replace(recipe, save_steps=2, save_total_limit=None)
    recipe.optim = dataclasses.replace(recipe.optim, max_steps=5)

    model, processor = build_tiny_llava()
    full = build_trainer("dpo", recipe, model, processor, dataset)
    full.data_collator = OrderRecorder(full.data_collator)
    full.train()
    # the data loader collates one batch ahead, so each run records one batch more than it trains on
    assert len(full.data_collator.batches) == 6

    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "full" / "checkpoint-2", resumed_dir / "checkpoint-2")
    recipe2 = dataclasses.replace(recipe, output_dir=str(resumed_dir), resume_from_checkpoint="latest")
    model2, processor2 = build_tiny_llava()
    resumed = build_trainer("dpo", recipe2, model2, processor2, dataset)
    resumed.data_collator = OrderRecorder(resumed.data_collator)
    from mmalign_utils.train.peft_setup import checkpoint_to_resume

    assert checkpoint_to_resume(recipe2) == str(resumed_dir / "checkpoint-2")
    resumed.train(resume_from_checkpoint=checkpoint_to_resume(recipe2))
    assert resumed.state.global_step == 5
    assert resumed.data_collator.batches == full.data_collator.batches[2:]  # steps 3-5 (+ the look-ahead)
    logged_steps = [h["step"] for h in resumed.state.log_history if "loss" in h]
    assert logged_steps == [1, 2, 3, 4, 5]  # steps 1-2 from the checkpoint's trainer state, 3-5 trained now
    full_losses = {h["step"]: h["loss"] for h in full.state.log_history if "loss" in h}
    for h in resumed.state.log_history:
        if "loss" in h:
            assert h["loss"] == pytest.approx(full_losses[h["step"]], abs=1e-6)
    final = dict(full.model.named_parameters())
    for name, param in resumed.model.named_parameters():
        if param.requires_grad:
            assert torch.allclose(param, final[name], atol=1e-6), name


def test_saved_adapter_and_merged_model_reload_with_the_same_outputs(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from mmalign_utils.train.dpo import run_dpo
    from mmalign_utils.train.pair_batches import PairCollator

    recipe = tiny_recipe("dpo", tmp_path)
    model, processor = build_tiny_llava()
    dataset = tiny_data("dpo", 4)
    result = run_dpo(recipe, model, processor, dataset, save=False, progress=False)
    trained = result.trainer.model.eval()
    batch = PairCollator(processor)([dataset[i] for i in range(2)])
    inputs = {"input_ids": batch["pair_prompt_ids"], "attention_mask": batch["pair_prompt_mask"],
              "pixel_values": batch["pair_pixel_values"]}
    with torch.no_grad():
        expected = trained(**inputs).logits

    from mmalign_utils.train.peft_setup import save_adapter_and_merged

    adapter_copy_base, _ = build_tiny_llava()
    paths = save_adapter_and_merged(trained, processor, tmp_path / "out", merged=True, recipe=recipe)
    merged = AutoModelForImageTextToText.from_pretrained(paths["merged"]).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        assert torch.allclose(merged(**inputs).logits, expected, atol=1e-4)
        reloaded = PeftModel.from_pretrained(adapter_copy_base, paths["adapter"]).eval()
        assert torch.allclose(reloaded(**inputs).logits, expected, atol=1e-4)
    assert json.loads((tmp_path / "out" / "outputs.json").read_text()) == paths
    assert load_recipe(tmp_path / "out" / "recipe.yaml") == recipe


# ------------------------------------------------------------------------------------------------ dry run, launcher

def test_dry_run_builds_llava_7b_on_meta_without_downloading(monkeypatch):
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError("the dry run tried to download something")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    from mmalign_utils.train.dryrun import dry_run

    report = dry_run(default_recipe("dpo", "paper"), size="7b")
    # LoRA r128 on q,k,v,o (4096x4096), gate,up (4096->11008), down (11008->4096), 32 layers:
    # 128 x (4 x (4096 + 4096) + 2 x (4096 + 11008) + (11008 + 4096)) x 32
    lora = 128 * (4 * 8192 + 2 * 15104 + 15104) * 32
    projector = 1024 * 4096 + 4096 + 4096 * 4096 + 4096  # mlp2x_gelu from CLIP-L (1024) to 4096
    assert report.parameters["lora"] == lora == 319_815_680
    assert report.parameters["projector"] == projector
    assert report.parameters["trainable"] == lora + projector
    assert 7.0e9 < report.parameters["base_model"] < 7.1e9  # llava-1.5-7b-hf: 7.06B
    assert report.frozen_parts_trainable == []
    groups = {g["group"]: g for g in report.optimizer_groups}
    assert groups["lora"]["lr"] == 5e-5 and groups["projector"]["lr"] == 2e-5
    zero3, ddp = report.memory_gib["zero3"], report.memory_gib["ddp"]
    assert zero3["frozen_weights"] == pytest.approx(ddp["frozen_weights"] / 4)
    assert "LLaVA-1.5-7B" in report.format()


def test_launcher_overrides_and_print(capsys):
    from mmalign_utils.train.launch import main, parse_overrides

    assert parse_overrides(["--lora.r", "8", "--smoke", "--dpo.beta=0.3"]) == \
        {"lora.r": "8", "smoke": "true", "dpo.beta": "0.3"}
    assert main([str(REPO / "recipes/dpo_toy.yaml"), "--print-recipe", "--lora.r", "8"]) == 0
    assert "r: 8" in capsys.readouterr().out
    assert main([str(REPO / "recipes/dpo_toy.yaml"), "--print-recipe", "--lora.rank", "8"]) == 2


def test_launcher_runs_a_smoke_recipe_end_to_end(tmp_path, capsys):
    from mmalign_utils.train.launch import main

    code = main([str(REPO / "recipes/dpo_toy.yaml"), "--model", "tiny-random", "--train_data", "synthetic:6",
                 "--smoke", "true", "--output_dir", str(tmp_path / "run"), "--lora.r", "4"])
    assert code == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n"):])
    assert Path(summary["outputs"]["merged"], "model.safetensors").is_file()
    assert (tmp_path / "data").exists() is False  # synthetic data is built in memory
    cache = list((tmp_path / "run" / "ref_logps").glob("ref_logps-*.parquet"))
    assert len(cache) == 1  # the cached reference, stored beside the (here: in-memory) data's run folder


def test_sharded_runs_save_through_the_trainer_and_merge_a_cpu_reload(tmp_path, monkeypatch):
    """Under DeepSpeed/FSDP the weights in memory are shards: the adapter is saved by Trainer.save_model and the
    merged model built from a fresh load of the starting model. Checked here by flagging a CPU run as sharded."""
    from transformers import AutoModelForImageTextToText

    from mmalign_utils.models import save_mllm
    from mmalign_utils.train.pair_batches import PairCollator
    from mmalign_utils.train.peft_setup import save_run_outputs

    model, processor = build_tiny_llava()
    save_mllm(model, processor, tmp_path / "start")
    recipe = dataclasses.replace(tiny_recipe("dpo", tmp_path / "run"), model=str(tmp_path / "start"))
    dataset = tiny_data("dpo", 4)
    trainer = build_trainer("dpo", recipe, model, processor, dataset)
    trainer.train()
    from mmalign_utils.train import peft_setup

    from mmalign_utils import models

    reloads = []
    real_load = models.load_mllm
    monkeypatch.setattr(models, "load_mllm", lambda *a, **k: reloads.append(a[0]) or real_load(*a, **k))
    monkeypatch.setattr(peft_setup, "is_sharded", lambda trainer: True)
    paths = save_run_outputs(trainer, processor, recipe)
    assert reloads == [str(tmp_path / "start")]  # the merge started from a fresh load of the starting model
    assert not (tmp_path / "run" / "adapter" / "non_lora_trainables.safetensors").exists()
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    batch = PairCollator(processor)([dataset[i] for i in range(2)])
    inputs = {"input_ids": batch["pair_prompt_ids"], "attention_mask": batch["pair_prompt_mask"],
              "pixel_values": batch["pair_pixel_values"]}
    with torch.no_grad():
        expected = trainer.model.eval()(**inputs).logits
        merged = AutoModelForImageTextToText.from_pretrained(paths["merged"]).eval()
        assert torch.allclose(merged(**inputs).logits, expected, atol=1e-4)


def test_merge_runs_in_fp32_so_small_lora_updates_survive():
    """W + dW in bf16 rounds to 8 mantissa bits: an update below half a bf16 step of W vanishes. The merge runs in
    fp32 and (toy profile) saves fp32, so the merged weight is exactly W + dW."""
    from peft import get_peft_model

    from mmalign_utils.train.peft_setup import build_lora_config, merge_in_fp32, resolve_merged_dtype

    recipe = default_recipe("dpo", "toy")
    assert resolve_merged_dtype(recipe) == torch.float32
    assert resolve_merged_dtype(default_recipe("dpo", "paper")) == torch.bfloat16

    def lora_model():
        model, _ = build_tiny_llava(dtype=torch.bfloat16)
        peft_model = get_peft_model(model, build_lora_config(model, recipe))
        for name, param in peft_model.named_parameters():
            if "lora_A" in name:
                torch.nn.init.constant_(param, 1.0)
            elif "lora_B" in name:
                torch.nn.init.constant_(param, 3e-7)  # dW = 3e-7 * r * (alpha / r) = 9.6e-6 per entry
        return peft_model

    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    start = dict(build_tiny_llava(dtype=torch.bfloat16)[0].named_parameters())[name].float()
    delta = 3e-7 * recipe.lora.r * (recipe.lora.alpha / recipe.lora.r)
    merged = dict(merge_in_fp32(lora_model(), torch.float32).named_parameters())[name]
    assert torch.allclose(merged, start + delta, atol=1e-8, rtol=0)  # fp32 rounding only (delta is 9.6e-6)
    naive = dict(lora_model().merge_and_unload().named_parameters())[name]  # merged straight into bf16
    lost = (naive.float() == start).float().mean()
    assert lost > 0.5  # most entries did not move at all: the trap the fp32 merge avoids


def test_a_resumed_run_reports_its_whole_training_time_from_the_sittings_ledger(tmp_path):
    from mmalign_utils.train.dpo import run_dpo
    from mmalign_utils.train.peft_setup import sittings_so_far

    dataset = tiny_data("dpo", 4)
    first = tiny_recipe("dpo", tmp_path, resume_from_checkpoint=None)
    first = dataclasses.replace(first, save_steps=2, save_total_limit=None)
    first.optim = dataclasses.replace(first.optim, max_steps=2)
    model, processor = build_tiny_llava()
    run_dpo(first, model, processor, dataset, save=False, progress=False)
    (sitting,) = sittings_so_far(tmp_path)
    assert sitting["resumed_from"] is None and sitting["last_step"] == 2 and sitting["seconds"] > 0

    # the session closed after step 2; the next one goes on from the checkpoint to step 4
    second = dataclasses.replace(first, resume_from_checkpoint="latest")
    second.optim = dataclasses.replace(first.optim, max_steps=4)
    model, processor = build_tiny_llava()
    result = run_dpo(second, model, processor, dataset, save=False, progress=False)
    ledger = sittings_so_far(tmp_path)
    assert [s["last_step"] for s in ledger] == [2, 4]
    assert ledger[1]["resumed_from"] == str(tmp_path / "checkpoint-2")
    assert result.metrics["sittings"] == 2
    assert result.metrics["train_runtime"] == pytest.approx(ledger[0]["seconds"] + ledger[1]["seconds"])
    assert 0 < result.metrics["train_runtime_this_sitting"] < result.metrics["train_runtime"]

    # a fresh start forgets the old run's sittings
    model, processor = build_tiny_llava()
    run_dpo(first, model, processor, dataset, save=False, progress=False)
    assert len(sittings_so_far(tmp_path)) == 1
