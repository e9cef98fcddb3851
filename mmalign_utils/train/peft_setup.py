"""What every alignment recipe shares: the LoRA config, the optimiser groups, precision, data and saving.

- `build_lora_config`: LoRA on every nn.Linear of the language model (q/k/v/o/gate/up/down for Llama), never on
  lm_head, the projector or the vision tower; the projector as a PEFT `modules_to_save` copy by default.
- `ProjectorLRMixin`: a Trainer mixin whose optimiser has the LoRA weights at `learning_rate` and the projector
  at its own `projector_learning_rate` (TRL has no per-module learning rate). The scheduler scales both groups.
- `resolve_precision`: bf16 autocast on GPU; on CPU `use_cpu=True`, with bf16 autocast where the CPU has bf16
  instructions (`precision.cpu_compute_dtype`) and fp32 elsewhere, unless a recipe names one.
- `training_arguments`: the Trainer/TRL config keywords of a recipe.
- `save_adapter_and_merged`: the LoRA adapter (+ projector) and the merged model (save_mllm format).
"""
from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from transformers import TrainerCallback

from mmalign_utils.precision import cpu_uses_bf16
from mmalign_utils.stamps import DATASET_FILES, MODEL_FILES, folder_stamp, is_saved_dataset
from mmalign_utils.train.recipes import SMOKE_ROWS, SMOKE_STEPS, Recipe
from mmalign_utils.train.saved_activations import bf16_saved_activations

LANGUAGE_MODEL_KEY = "language_model"
PROJECTOR_KEY = "multi_modal_projector"
VISION_KEY = "vision_tower"


# ------------------------------------------------------------------------------------------------------------
# LoRA targets.

def language_model_linear_names(model: torch.nn.Module) -> list[str]:
    """Leaf names of the nn.Linear layers inside the language model (e.g. q_proj ... down_proj for Llama)."""
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and f".{LANGUAGE_MODEL_KEY}." in f".{name}"}
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear under a '{LANGUAGE_MODEL_KEY}' module; "
                         "the recipes expect a LLaVA-style model (model.language_model)")
    return sorted(names)


def lora_target_regex(model: torch.nn.Module) -> str:
    """A PEFT target regex (full match) for every language-model linear layer and nothing else."""
    leaves = "|".join(re.escape(n) for n in language_model_linear_names(model))
    return rf"(?:.*\.)?{LANGUAGE_MODEL_KEY}\..*\.(?:{leaves})"


def build_lora_config(model: torch.nn.Module, recipe: Recipe) -> LoraConfig:
    spec = recipe.lora
    return LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, bias="none",
        target_modules=lora_target_regex(model),
        modules_to_save=[PROJECTOR_KEY] if spec.projector == "modules_to_save" else None,
    )


def unfreeze_projector_outside_peft(peft_model: torch.nn.Module) -> int:
    """The paper's layout (lora.projector 'outside'): after PEFT froze the base, make the projector trainable."""
    count = 0
    for name, param in peft_model.named_parameters():
        if PROJECTOR_KEY in name and "lora_" not in name:
            param.requires_grad_(True)
            count += param.numel()
    return count


# ------------------------------------------------------------------------------------------------------------
# Optimiser groups.

def param_groups(model: torch.nn.Module, learning_rate: float, projector_learning_rate: float,
                 weight_decay: float, decay_names: set[str] | None = None) -> list[dict]:
    """Optimiser groups: LoRA (decay / no decay) at learning_rate, projector (decay / no decay) at its own rate.

    Each group has a "group" key naming it (torch keeps extra keys); empty groups are left out. The LoRA group
    comes first, so the learning rate the Trainer logs is the LoRA one.
    """
    buckets: dict[tuple[str, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        kind = "projector" if PROJECTOR_KEY in name else "lora"
        decay = decay_names is None or name in decay_names
        buckets.setdefault((kind, decay), []).append(param)
    groups = []
    for kind in ("lora", "projector"):
        for decay in (True, False):
            params = buckets.get((kind, decay))
            if params:
                groups.append({"params": params, "group": f"{kind}{'' if decay else '_no_decay'}",
                               "lr": learning_rate if kind == "lora" else projector_learning_rate,
                               "weight_decay": weight_decay if decay else 0.0})
    return groups


def describe_param_groups(groups: list[dict]) -> list[dict]:
    """Name, learning rate, weight decay and parameter count of each group (for reports and the dry run)."""
    return [{"group": g["group"], "lr": g["lr"], "weight_decay": g["weight_decay"],
             "params": sum(p.numel() for p in g["params"]), "tensors": len(g["params"])} for g in groups]


NON_LORA_FILE = "non_lora_trainables.safetensors"  # the paper's non_lora_trainables.bin, as safetensors


def outside_trainables(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable weights PEFT does not save itself: neither LoRA nor a modules_to_save copy ('outside' projector)."""
    return {name: param for name, param in model.named_parameters()
            if param.requires_grad and "lora_" not in name and "modules_to_save" not in name}


class ProjectorLRMixin:
    """Put before the TRL trainer class: `class T(ProjectorLRMixin, DPOTrainer)`.

    - the optimiser gets the LoRA weights at `learning_rate` and the projector at `projector_learning_rate`;
    - checkpoints also hold the trainable weights PEFT does not save (the 'outside' projector), and resuming
      loads them back, so a resumed run continues from the same weights.
    """

    projector_learning_rate: float | None = None

    def create_optimizer(self, model=None):
        opt_model = self.model if model is None else model
        if self.optimizer is None and self.projector_learning_rate is not None:
            decay = set(self.get_decay_parameter_names(opt_model))
            groups = param_groups(opt_model, self.args.learning_rate, self.projector_learning_rate,
                                  self.args.weight_decay, decay)
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)  # group lrs override the default lr
        return super().create_optimizer(model)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        extra = outside_trainables(self.accelerator.unwrap_model(self.model))
        if extra and self.args.should_save:
            from safetensors.torch import save_file

            folder = Path(output_dir if output_dir is not None else self.args.output_dir)
            save_file({k: v.detach().cpu().contiguous() for k, v in extra.items()}, str(folder / NON_LORA_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = Path(resume_from_checkpoint) / NON_LORA_FILE
        if path.is_file():
            from safetensors.torch import load_file

            target = self.accelerator.unwrap_model(model if model is not None else self.model)
            params = dict(target.named_parameters())
            for name, tensor in load_file(str(path)).items():
                if name not in params:
                    raise KeyError(f"{path}: weight {name!r} is not in the model being resumed")
                params[name].data.copy_(tensor.to(params[name].device, params[name].dtype))


# ------------------------------------------------------------------------------------------------------------
# Precision and training arguments.

def has_cuda() -> bool:
    return torch.cuda.is_available()


def resolve_precision(recipe: Recipe) -> dict[str, Any]:
    """TrainingArguments keywords for the compute dtype: bf16/fp16 autocast, use_cpu on a machine without GPU."""
    precision = recipe.hardware.precision
    cuda = has_cuda()
    if precision == "auto":
        if cuda:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:  # bf16 autocast only where the CPU has bf16 instructions (precision.py: far slower without)
            precision = "bf16" if cpu_uses_bf16() else "fp32"
    if precision == "fp16" and not cuda:
        raise ValueError("hardware.precision fp16 needs a GPU; use bf16 or fp32 on CPU")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": not cuda}


def resolve_weights_dtype(recipe: Recipe) -> torch.dtype:
    """dtype of the frozen base weights: bf16 whenever the compute is bf16 (halves their memory), else fp32."""
    choice = recipe.hardware.weights_dtype
    if choice == "auto":
        kwargs = resolve_precision(recipe)
        choice = "bf16" if kwargs["bf16"] else ("fp16" if kwargs["fp16"] else "fp32")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[choice]


def training_arguments(recipe: Recipe) -> dict[str, Any]:
    """Keywords shared by SFTConfig and DPOConfig for this recipe."""
    o, h = recipe.optim, recipe.hardware
    smoke = {}
    if recipe.smoke:
        smoke = {"max_steps": SMOKE_STEPS, "per_device_train_batch_size": min(2, o.per_device_batch_size),
                 "gradient_accumulation_steps": 1, "warmup_steps": 0.0, "logging_steps": 1}
    return {
        "output_dir": recipe.output_dir,
        "num_train_epochs": o.epochs,
        "max_steps": o.max_steps,
        "per_device_train_batch_size": o.per_device_batch_size,
        "gradient_accumulation_steps": o.gradient_accumulation_steps,
        "learning_rate": o.learning_rate,
        "lr_scheduler_type": o.lr_scheduler,
        "warmup_steps": o.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the total steps
        "weight_decay": o.weight_decay,
        "max_grad_norm": o.max_grad_norm,
        "max_length": o.max_length,
        "activation_checkpointing": h.gradient_checkpointing,
        "dataloader_num_workers": h.dataloader_num_workers,
        "logging_steps": recipe.logging_steps,
        "save_steps": recipe.save_steps,
        "save_total_limit": recipe.save_total_limit,
        "seed": recipe.seed,
        "data_seed": recipe.seed,
        "report_to": "none",
        **resolve_precision(recipe),
        **smoke,
    }


RUN_RECIPE_FILE = "run_recipe.yaml"  # the recipe that wrote the checkpoint-* folders beside it
SITTINGS_FILE = "sittings.json"  # wall-clock seconds of each train() call of the run, for resumed runs' totals


def _checkpoints(output_dir: str | Path) -> list[Path]:
    """The Trainer's checkpoint-N folders under output_dir, oldest step first."""
    def step(path: Path) -> int:
        tail = path.name.split("-")[-1]
        return int(tail) if tail.isdigit() else -1

    return sorted((p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir()), key=step)


def _run_identity(recipe: Recipe) -> str:
    """The recipe as YAML without the resume setting, plus stamps of its starting model and training data: two
    runs with the same identity train the same way (a rerun of notebook 02 that rewrote the data is another)."""
    import dataclasses

    from mmalign_utils.train.recipes import dump_recipe

    stamps = (f"# model files: {folder_stamp(recipe.model, MODEL_FILES + ('*.json',))}\n"
              f"# data files: {folder_stamp(recipe.train_data, DATASET_FILES)}\n")
    return dump_recipe(dataclasses.replace(recipe, resume_from_checkpoint=None)) + stamps


def checkpoint_to_resume(recipe: Recipe) -> str | None:
    """The checkpoint folder to resume from: the recipe's; the newest under output_dir for "latest"; for "auto"
    the newest under output_dir when `run_recipe.yaml` there shows that this same recipe wrote it (a notebook
    rerun after a crash or a closed session goes on where it stopped), else None (a fresh start)."""
    value = recipe.resume_from_checkpoint
    if value is None:
        return None
    if value in ("latest", "auto"):
        checkpoints = _checkpoints(recipe.output_dir)
        if value == "auto":
            written_by = Path(recipe.output_dir) / RUN_RECIPE_FILE
            same = written_by.is_file() and written_by.read_text(encoding="utf-8") == _run_identity(recipe)
            return str(checkpoints[-1]) if checkpoints and same else None
        if not checkpoints:
            raise FileNotFoundError(
                f"resume_from_checkpoint 'latest': no checkpoint-* folder under {recipe.output_dir}")
        return str(checkpoints[-1])
    if not (Path(value) / "trainer_state.json").is_file():
        raise FileNotFoundError(f"resume_from_checkpoint {value}: not a Trainer checkpoint (no trainer_state.json)")
    return value


def mark_run(recipe: Recipe, resuming: str | None) -> None:
    """Before training: record which recipe writes the checkpoints in output_dir (`run_recipe.yaml`). A fresh
    start removes checkpoints that another recipe left there, so that "auto" never resumes from them."""
    import shutil

    output_dir = Path(recipe.output_dir)
    if resuming is None:
        (output_dir / SITTINGS_FILE).unlink(missing_ok=True)  # a fresh run's time starts at zero
        stale = _checkpoints(output_dir)
        for folder in stale:
            shutil.rmtree(folder)
        if stale:
            print(f"[mmalign] {output_dir}: removed {len(stale)} checkpoint(s) of an earlier run "
                  f"({', '.join(p.name for p in stale)}); this run starts afresh")
    else:
        print(f"[mmalign] resuming from {resuming}")
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / RUN_RECIPE_FILE).write_text(_run_identity(recipe), encoding="utf-8")


# ------------------------------------------------------------------------------------------------------------
# Models and data.

def load_model_for_training(recipe: Recipe, model=None, processor=None) -> tuple[Any, Any]:
    """The starting MLLM (weights in resolve_weights_dtype) and its processor, unless both are given."""
    if model is not None and processor is not None:
        return model, processor
    from mmalign_utils.models import load_mllm

    if not recipe.model:
        raise ValueError("the recipe names no model: set `model` to a saved model folder or a llava-hf hub id")
    model, processor = load_mllm(recipe.model, dtype=resolve_weights_dtype(recipe))
    return model, processor


def load_train_dataset(recipe: Recipe, dataset=None):
    """The training rows: a given Dataset, or `recipe.train_data` read with load_from_disk; capped by
    max_train_samples."""
    from datasets import Dataset, load_from_disk

    if dataset is None:
        if not recipe.train_data:
            raise ValueError("the recipe names no train_data: set it to a datasets.save_to_disk folder")
        path = Path(recipe.train_data)
        if not is_saved_dataset(path):
            raise FileNotFoundError(f"train_data {path} is not a datasets.save_to_disk folder (build it with "
                                    "mmalign_utils.preference.build_* and save_dataset)")
        dataset = load_from_disk(str(path))
    if not isinstance(dataset, Dataset):
        raise TypeError(f"expected a datasets.Dataset, got {type(dataset).__name__}")
    cap = min(recipe.max_train_samples or len(dataset), SMOKE_ROWS if recipe.smoke else len(dataset))
    if cap < len(dataset):
        dataset = dataset.select(range(cap))
    if len(dataset) == 0:
        raise ValueError(f"train_data {recipe.train_data or '(given dataset)'} has no rows")
    return dataset


def is_sharded(trainer) -> bool:
    """Whether the trainer's weights are DeepSpeed- or FSDP-managed (possibly sharded) rather than plain tensors."""
    return bool(getattr(trainer, "is_deepspeed_enabled", False) or getattr(trainer, "is_fsdp_enabled", False))


def finalize_trainable(trainer, recipe: Recipe) -> None:
    """After the trainer wrapped the model in PEFT: the paper's 'outside' projector, and fp32 trainable weights.

    A base model loaded in bf16 gives a bf16 copy of the projector in modules_to_save; AdamW on bf16 weights
    loses small updates, so trainable weights are kept in fp32 (autocast runs the matmuls in bf16). Under
    DeepSpeed the engine keeps fp32 master weights itself and ZeRO-3 needs one dtype, so nothing changes there.
    """
    if recipe.lora.projector == "outside":
        if is_sharded(trainer):
            raise ValueError("lora.projector 'outside' is not supported with DeepSpeed or FSDP (its weights are "
                             "saved outside PEFT's adapter); use lora.projector 'modules_to_save'")
        unfreeze_projector_outside_peft(trainer.model)
    if getattr(trainer, "is_fsdp_enabled", False):
        dtypes = {p.dtype for p in trainer.model.parameters()}
        if len(dtypes) > 1:
            raise ValueError(
                f"FSDP flattens each wrapped layer into one tensor, so all weights need one dtype; this model mixes "
                f"{sorted(str(d) for d in dtypes)} (bf16 base weights, fp32 LoRA). Run with "
                "--hardware.weights_dtype fp32: FSDP's mixed precision (bf16 in configs/accelerate/fsdp.yaml) still "
                "computes in bf16 and the fp32 weights are sharded over the GPUs.")
        return
    if not getattr(trainer, "is_deepspeed_enabled", False):
        for param in trainer.model.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()


@contextlib.contextmanager
def training_attention(model):
    """On CPU, eager attention while this block runs (the SDPA flash-attention backward in bf16 is slow there;
    measured in train/vit.py), then the model's own implementation again. Used for training and for the cached
    DPO reference pass alike, so that reference and policy log-probs come from the same arithmetic."""
    if has_cuda():
        yield
        return
    attn = model.config.text_config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(attn)


def keeps_bf16_activations(trainer, setting: str = "auto") -> bool:
    """Whether `training_speedups` keeps saved activations in bf16 (recipes' hardware.saved_activations).
    "auto": on a CPU with fp32 compute (no bf16 instructions; under autocast they are narrow already), for a
    trainer whose log-prob kernel stays right under it (`supports_bf16_saved_activations`: AlignDPOTrainer,
    whose CPU kernel's gradient reads probabilities it kept, not the stored hidden state; TRL's fused LM head,
    used by the SFT-style recipes and by DPO on GPUs, would pair a bf16-rounded hidden state with the forward's
    fp32 normaliser). "fp32": never."""
    if setting not in ("auto", "fp32"):
        raise ValueError(f"saved_activations must be 'auto' or 'fp32', got {setting!r}")
    if setting == "fp32" or trainer.args.bf16 or trainer.args.fp16:
        return False
    on_cpu = trainer.args.use_cpu or not has_cuda()
    return on_cpu and bool(getattr(trainer, "supports_bf16_saved_activations", False))


@contextlib.contextmanager
def training_speedups(trainer, saved_activations: str = "auto"):
    """While training only: no LoRA input casting under autocast, `training_attention`, and (fp32 compute, see
    `keeps_bf16_activations`) activations saved for the backward kept in bf16. All are undone afterwards,
    so the model that is evaluated and saved runs exactly as it loads."""
    model = trainer.model
    autocast = (trainer.args.bf16 or trainer.args.fp16) and not is_sharded(trainer)
    narrow = keeps_bf16_activations(trainer, saved_activations)
    try:
        if autocast:
            set_lora_input_casting(model, False)
        with training_attention(model), \
                (bf16_saved_activations(model) if narrow else contextlib.nullcontext()) as stats:
            yield stats
    finally:
        set_lora_input_casting(model, True)


def set_lora_input_casting(model: torch.nn.Module, enabled: bool) -> None:
    """PEFT casts every LoRA layer's input to the adapter dtype (fp32): under autocast that is a copy of each
    activation for nothing, since autocast runs the adapter matmul in bf16 anyway (toy VIT stage 2: 5.7 -> 4.4 s
    per step, benchmarks/vit_diagnostics.py step-speed). Only for training under autocast: outside it a bf16
    input needs the cast."""
    for module in model.modules():
        if hasattr(module, "lora_A"):
            module.cast_input_dtype_enabled = enabled


@dataclass
class RunResult:
    """What a training run returns: where it saved, the final metrics, the log and the parameter counts."""

    output_dir: str
    outputs: dict[str, str] = field(default_factory=dict)  # adapter / merged folders
    metrics: dict[str, float] = field(default_factory=dict)
    log_history: list[dict] = field(default_factory=list)
    parameters: dict[str, int] = field(default_factory=dict)
    trainer: Any = None


def trainable_summary(model: torch.nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts, split by part (lora, projector, other)."""
    out = {"trainable": 0, "total": 0, "lora": 0, "projector": 0, "other_trainable": 0}
    for name, param in model.named_parameters():
        out["total"] += param.numel()
        if param.requires_grad:
            out["trainable"] += param.numel()
            key = "lora" if "lora_" in name else "projector" if PROJECTOR_KEY in name else "other_trainable"
            out[key] += param.numel()
    return out


def resolve_merged_dtype(recipe: Recipe | None) -> torch.dtype:
    """dtype the merged model is saved in: fp32 for the toy profile, the weights dtype for the paper ("auto")."""
    if recipe is None:
        return torch.float32
    choice = recipe.merged_dtype
    if choice == "auto":
        return torch.float32 if recipe.profile == "toy" else resolve_weights_dtype(recipe)
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[choice]


def merge_in_fp32(peft_model, dtype: torch.dtype):
    """merge_and_unload with every weight in fp32 on the CPU (W + dW without rounding), then cast to `dtype`.

    Merging into bf16 weights directly would round each W + dW to 8 mantissa bits and lose LoRA updates smaller
    than half a bf16 step of W. Changes the model in place: call it at the end of a run.
    """
    peft_model = peft_model.to(device="cpu", dtype=torch.float32)
    return peft_model.merge_and_unload().to(dtype)


def save_adapter_and_merged(peft_model, processor, output_dir: str | Path, merged: bool = True,
                            recipe: Recipe | None = None) -> dict[str, str]:
    """Write `adapter/` (PEFT: LoRA + projector) and, when merged, `merged/` (merged in fp32, saved in
    resolve_merged_dtype(recipe), with save_mllm).

    The merged folder loads with AutoModelForImageTextToText / models.load_mllm like any llava-hf model.
    Merging changes the model in place (and moves it to the CPU), so call this at the end of a run.
    """
    from mmalign_utils.models import save_mllm
    from mmalign_utils.train.recipes import dump_recipe

    output_dir = Path(output_dir)
    paths = {"adapter": str(output_dir / "adapter")}
    peft_model.save_pretrained(paths["adapter"])
    processor.save_pretrained(paths["adapter"])
    extra = outside_trainables(peft_model)
    if extra:  # the 'outside' projector: PEFT's adapter files do not hold it
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in extra.items()},
                  str(Path(paths["adapter"]) / NON_LORA_FILE))
    if recipe is not None:
        dump_recipe(recipe, output_dir / "recipe.yaml")
    if merged:
        merged_model = merge_in_fp32(peft_model, resolve_merged_dtype(recipe))
        paths["merged"] = str(save_mllm(merged_model, processor, output_dir / "merged"))
    (output_dir / "outputs.json").write_text(json.dumps(paths, indent=1))
    return paths


def save_run_outputs(trainer, processor, recipe: Recipe) -> dict[str, str]:
    """Save a finished run: adapter and merged model. Call on every process (sharded weights are gathered).

    Without sharding the trained PEFT model is saved and merged in place. Under DeepSpeed or FSDP the Trainer
    gathers and saves the adapter; the main process then reloads the starting model on the CPU, loads the adapter
    into it and merges, so no process ever needs the whole model on its GPU.
    """
    output_dir = Path(recipe.output_dir)
    if not is_sharded(trainer):
        if not trainer.accelerator.is_main_process:
            return {}
        return save_adapter_and_merged(trainer.accelerator.unwrap_model(trainer.model), processor, output_dir,
                                       merged=recipe.save_merged, recipe=recipe)
    adapter_dir = output_dir / "adapter"
    trainer.save_model(str(adapter_dir))  # collective: every rank takes part in the gather
    if not trainer.accelerator.is_main_process:
        return {}
    from peft import PeftModel

    from mmalign_utils.models import load_mllm, save_mllm
    from mmalign_utils.train.recipes import dump_recipe

    processor.save_pretrained(adapter_dir)
    dump_recipe(recipe, output_dir / "recipe.yaml")
    paths = {"adapter": str(adapter_dir)}
    if recipe.save_merged:
        base, _ = load_mllm(recipe.model, dtype=torch.float32)
        merged = merge_in_fp32(PeftModel.from_pretrained(base, str(adapter_dir)), resolve_merged_dtype(recipe))
        paths["merged"] = str(save_mllm(merged, processor, output_dir / "merged"))
    (output_dir / "outputs.json").write_text(json.dumps(paths, indent=1))
    return paths


def logged_mean_loss(log_history: list[dict]) -> float:
    """The training loss averaged over the logged steps: each logged loss (the mean of its logging window)
    weighted by its window's length in steps; NaN when nothing was logged."""
    total, steps, previous = 0.0, 0, 0
    for entry in log_history:
        if "loss" in entry and "train_loss" not in entry:
            width = int(entry["step"]) - previous
            total, steps, previous = total + float(entry["loss"]) * width, steps + width, int(entry["step"])
    return total / steps if steps else float("nan")


class SittingClock(TrainerCallback):
    """A Trainer callback that keeps {output_dir}/sittings.json up to date after every step: one entry per
    train() call (resumed_from, seconds, last_step), so a run resumed after a crash or a closed session can
    report its whole wall-clock time, not only the last sitting's (the Trainer's train_runtime)."""

    def __init__(self, output_dir: str | Path, resumed_from: str | None):
        self.path = Path(output_dir) / SITTINGS_FILE
        self.started = time.perf_counter()
        self.sittings = sittings_so_far(output_dir) + [{"resumed_from": resumed_from, "seconds": 0.0, "last_step": 0}]

    def _write(self, state) -> None:
        self.sittings[-1].update(seconds=round(time.perf_counter() - self.started, 3), last_step=int(state.global_step))
        if state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.sittings, indent=1), encoding="utf-8")

    def on_step_end(self, args, state, control, **kwargs):
        self._write(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._write(state)


def sittings_so_far(output_dir: str | Path) -> list[dict]:
    """The sittings recorded in output_dir (empty for a fresh run or one trained before the ledger existed)."""
    path = Path(output_dir) / SITTINGS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def train_and_save(trainer, processor, recipe: Recipe, save: bool = True) -> RunResult:
    """Train (resuming from a checkpoint if the recipe asks: checkpoint_to_resume), collect the run's metrics and,
    with `save`, write the adapter and the merged model: the common tail of every recipe."""
    resuming = checkpoint_to_resume(recipe)
    if trainer.accelerator.is_main_process:
        mark_run(recipe, resuming)
    clock = SittingClock(recipe.output_dir, resuming)
    trainer.add_callback(clock)
    with training_speedups(trainer, recipe.hardware.saved_activations):
        train_output = trainer.train(resume_from_checkpoint=resuming)
    trainer.remove_callback(clock)
    metrics = dict(train_output.metrics)
    if resuming is not None:
        # The Trainer averages train_loss over the steps of this sitting only (0 when the checkpoint was the last
        # step); the whole run's average comes from the logged losses, which the checkpoint carried over.
        metrics["train_loss"] = logged_mean_loss(trainer.state.log_history)
        metrics["resumed_from"] = resuming
        # Likewise train_runtime: this sitting's, next to the sum over every recorded sitting. A run whose earlier
        # sittings predate the ledger has no whole-run time; it reports none rather than this sitting's alone.
        metrics["train_runtime_this_sitting"] = metrics.pop("train_runtime", float("nan"))
        sittings = clock.sittings
        if len(sittings) > 1:
            metrics["train_runtime"] = float(sum(s["seconds"] for s in sittings))
            metrics["sittings"] = len(sittings)
    result = RunResult(output_dir=recipe.output_dir, metrics=metrics,
                       log_history=list(trainer.state.log_history), parameters=trainable_summary(trainer.model),
                       trainer=trainer)
    if save:
        result.outputs = save_run_outputs(trainer, processor, recipe)
    return result


__all__ = [
    "LANGUAGE_MODEL_KEY", "NON_LORA_FILE", "PROJECTOR_KEY", "RUN_RECIPE_FILE", "SITTINGS_FILE", "VISION_KEY",
    "ProjectorLRMixin", "RunResult", "SittingClock", "build_lora_config", "checkpoint_to_resume",
    "describe_param_groups", "finalize_trainable", "is_sharded", "keeps_bf16_activations",
    "language_model_linear_names", "load_model_for_training", "load_train_dataset", "logged_mean_loss",
    "lora_target_regex", "mark_run", "merge_in_fp32", "outside_trainables", "param_groups", "resolve_merged_dtype",
    "resolve_precision", "resolve_weights_dtype", "save_adapter_and_merged", "save_run_outputs",
    "set_lora_input_casting", "sittings_so_far", "train_and_save", "trainable_summary", "training_arguments",
    "training_attention", "training_speedups", "unfreeze_projector_outside_peft",
]
