"""Alignment recipes as dataclasses: the paper's hyper-parameters, a CPU-sized toy profile, YAML round trips.

A `Recipe` says everything one training run needs: which method (SFT, rejection sampling, SteerLM, DPO), which
model and dataset, the LoRA shape, the optimiser and schedule, the hardware settings and, for DPO, the loss and
the reference. `default_recipe(method, profile)` gives the paper's numbers (paper-recipe.md §4) or the toy ones;
`load_recipe("recipes/dpo_toy.yaml", overrides)` reads a YAML file on top of those defaults, so a YAML file only
needs the keys that differ.

Overrides use dotted keys for nested fields: `{"lora.r": 8, "optim.learning_rate": 1e-4, "dpo.beta": 0.3}`;
the launcher turns `--lora.r 8` into exactly that.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from mmalign_utils.stamps import is_saved_dataset

Method = Literal["sft", "rejection_sampling", "steerlm", "dpo"]
METHODS: tuple[str, ...] = get_args(Method)
SFT_METHODS: tuple[str, ...] = ("sft", "rejection_sampling", "steerlm")
ProjectorMode = Literal["modules_to_save", "outside", "frozen"]
ReferenceMode = Literal["cached", "lora", "dataset"]
Precision = Literal["auto", "bf16", "fp32", "fp16"]
WeightsDtype = Literal["auto", "bf16", "fp32", "fp16"]
SavedActivations = Literal["auto", "fp32"]

# The DPO losses TRL 1.16 implements (DPOConfig.loss_type); any of them, or a list, is one key away.
TRL_DPO_LOSSES: tuple[str, ...] = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)


class RecipeError(ValueError):
    """A recipe file or override is wrong; the message names the key and what is allowed."""


@dataclass
class LoraSpec:
    """LoRA on every linear layer of the language model; lm_head, projector and vision tower are never adapted.

    projector:
      - "modules_to_save" (default): the projector trains as a PEFT `modules_to_save` copy, so disabling the
        adapters (TRL's LoRA-as-reference) also restores the original projector: the live reference stays the
        starting model.
      - "outside": the projector is unfrozen outside PEFT, as the paper's LLaVA code did. With a live LoRA
        reference this makes the reference drift (the adapter-off pass uses the updated projector), so it is only
        accepted with `dpo.reference: cached` (and for the SFT methods, which have no reference).
      - "frozen": the projector is not trained.
    """

    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    projector: ProjectorMode = "modules_to_save"


@dataclass
class OptimSpec:
    """Optimiser and schedule. The projector gets its own learning rate through its own optimiser group."""

    learning_rate: float = 4e-4  # the LoRA weights
    projector_learning_rate: float = 2e-5
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    per_device_batch_size: int = 16  # rows for SFT, pairs for DPO
    gradient_accumulation_steps: int = 2
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int | None = 2048  # tokens per sequence, image tokens included; None: no truncation


@dataclass
class HardwareSpec:
    """precision: compute dtype of the forward/backward (autocast). "auto": bf16 on a GPU that supports it; on a
    CPU bf16 autocast where it has bf16 instructions (faster and numerically sound there, docs/alignment.md) and
    fp32 where it has not (bf16 is emulated there, 2.4-24x slower: mmalign_utils/precision.py); "fp32" turns
    autocast off. weights_dtype: the dtype the frozen base weights are loaded in ("auto": bf16 whenever precision
    is bf16, else fp32); the LoRA and projector weights always train in fp32. saved_activations: the dtype of the
    activations kept for the backward, DPO only ("auto": bf16 on a CPU with fp32 compute, i.e. without bf16
    instructions, where memory is scarce; "fp32": as computed; train/saved_activations.py,
    peft_setup.keeps_bf16_activations)."""

    precision: Precision = "auto"
    weights_dtype: WeightsDtype = "auto"
    saved_activations: SavedActivations = "auto"
    gradient_checkpointing: bool = False
    dataloader_num_workers: int = 0


@dataclass
class DPOSpec:
    """reference:
      - "cached" (default): summed reference log-probs of chosen and rejected computed once with the starting
        model, stored beside the dataset (ref_cache.py), read from the batch during training; no reference forward.
      - "lora": TRL's LoRA-as-reference, a live forward with the adapters disabled every step.
      - "dataset": ref_chosen_logps / ref_rejected_logps columns already in the data (e.g. the paper's released
        file, computed by the authors with LLaVA-1.5-13B in fp16).
    shared_prefix: encode each image once per pair and run the prompt once for chosen and rejected (its key/value
    cache is shared); the log-probs equal TRL's concatenated forward to float precision.
    """

    beta: float = 0.1
    loss_type: str | list[str] = "sigmoid"
    loss_weights: list[float] | None = None
    label_smoothing: float = 0.0
    reference: ReferenceMode = "cached"
    shared_prefix: bool = True
    ref_cache_dir: str | None = None  # default: <train_data>/ref_logps
    ref_batch_size: int = 8
    # The paper's LLaVA code kept LoRA dropout active in the policy forward; TRL's default (True) turns every
    # dropout off. False keeps the paper's behaviour.
    disable_dropout: bool = False


@dataclass
class Recipe:
    method: Method = "dpo"
    profile: Literal["toy", "paper"] = "toy"
    model: str = ""  # a saved model folder (save_mllm) or a llava-hf hub id
    train_data: str = ""  # a datasets.save_to_disk folder in TRL's conversational vision format
    output_dir: str = ""
    seed: int = 0
    lora: LoraSpec = field(default_factory=LoraSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    hardware: HardwareSpec = field(default_factory=HardwareSpec)
    dpo: DPOSpec = field(default_factory=DPOSpec)
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    # "auto": go on from the newest checkpoint under output_dir if this same recipe (and model and data) wrote it,
    # else start afresh; "latest": the newest checkpoint in any case; a checkpoint folder; None: start afresh
    resume_from_checkpoint: str | None = "auto"
    max_train_samples: int | None = None  # keep the first n rows (smoke runs, scaling studies)
    smoke: bool = False  # at run time: at most 8 rows and 2 steps of 2; checks that the recipe runs, not what it learns
    save_merged: bool = True  # also write the LoRA-merged model (loadable with AutoModelForImageTextToText)
    # dtype of the merged model. The merge itself runs in fp32 on the CPU; saving in bf16 rounds W + dW to 8
    # mantissa bits, which can erase LoRA updates smaller than half a bf16 step of W. "auto": fp32 for the toy
    # profile (small files, exact), the weights dtype for the paper (a 13B model in fp32 is 52 GB).
    merged_dtype: WeightsDtype = "auto"

    def __post_init__(self) -> None:
        validate(self)

    @property
    def is_dpo(self) -> bool:
        return self.method == "dpo"


# ----------------------------------------------------------------------------------------------------------------
# Defaults per method and profile.

def _paper(method: str) -> Recipe:
    if method == "dpo":
        optim = OptimSpec(learning_rate=5e-5, projector_learning_rate=2e-5, epochs=3, per_device_batch_size=8,
                          gradient_accumulation_steps=4, max_length=3000)
    else:
        optim = OptimSpec(learning_rate=4e-4, projector_learning_rate=2e-5, epochs=3, per_device_batch_size=16,
                          gradient_accumulation_steps=2, max_length=2048)
    return Recipe(
        method=method, profile="paper", model="llava-hf/llava-1.5-13b-hf",
        train_data=f"artifacts/paper/preference/{method}", output_dir=f"artifacts/paper/runs/{method}",
        lora=LoraSpec(r=128, alpha=256, dropout=0.05), optim=optim,
        hardware=HardwareSpec(precision="bf16", weights_dtype="bf16", gradient_checkpointing=True),
        dpo=DPOSpec(beta=0.1, loss_type="sigmoid"), logging_steps=10, save_steps=500,
    )


def _toy(method: str) -> Recipe:
    # Sized for a few hundred rows and minutes on 2 CPU cores: rank 16, short sequences, small batches. The
    # learning rates are the paper's; the toy LLaVA's VIT used LoRA 5e-4 and projector 1e-4.
    if method == "dpo":
        optim = OptimSpec(learning_rate=5e-5, projector_learning_rate=2e-5, epochs=3, per_device_batch_size=4,
                          gradient_accumulation_steps=2, max_length=None)
    else:
        optim = OptimSpec(learning_rate=4e-4, projector_learning_rate=2e-5, epochs=3, per_device_batch_size=8,
                          gradient_accumulation_steps=1, max_length=None)
    return Recipe(
        method=method, profile="toy", model="artifacts/toy/toy_llava/model",
        train_data=f"artifacts/toy/preference/{method}", output_dir=f"artifacts/toy/runs/{method}",
        lora=LoraSpec(r=16, alpha=32, dropout=0.05), optim=optim,
        hardware=HardwareSpec(precision="auto", weights_dtype="auto", gradient_checkpointing=False),
        dpo=DPOSpec(beta=0.1, loss_type="sigmoid", ref_batch_size=8), logging_steps=5, save_steps=100,
    )


def default_recipe(method: str, profile: str = "toy") -> Recipe:
    """The recipe with the paper's hyper-parameters (profile "paper") or the CPU-sized toy ones ("toy")."""
    if method not in METHODS:
        raise RecipeError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if profile == "paper":
        return _paper(method)
    if profile == "toy":
        return _toy(method)
    raise RecipeError(f"unknown profile {profile!r}; choose 'toy' or 'paper'")


SMOKE_ROWS = 8
SMOKE_STEPS = 2


def smoke_settings(recipe: Recipe) -> Recipe:
    """The same recipe shrunk to 2 steps of 2 rows on at most 8 rows, written out in its fields.

    `smoke: true` alone has the same effect at run time (training_arguments and load_train_dataset apply it), so
    a recipe file keeps its real numbers and `--smoke true` only checks that it runs.
    """
    recipe = dataclasses.replace(recipe, smoke=True, logging_steps=1,
                                 max_train_samples=min(recipe.max_train_samples or SMOKE_ROWS, SMOKE_ROWS))
    recipe.optim = dataclasses.replace(recipe.optim, max_steps=SMOKE_STEPS, per_device_batch_size=2,
                                       gradient_accumulation_steps=1, warmup_ratio=0.0)
    return recipe


def recipe_for_run(method: str, ctx: Any, **overrides: Any) -> Recipe:
    """The method's recipe for a notebook's RunContext: its profile, seed and smoke flag, and paths under its
    artifacts (model: the VIT'd toy LLaVA or the profile's MLLM; data: <variant>/preference/<method>, where
    notebook 02 saves it; both looked up in RunContext.input_dirs; output: <variant>/runs/<method>).
    `overrides` are dotted keys, as on the command line."""
    if ctx.profile == "toy":
        from mmalign_utils.train.vit import toy_llava_dir

        model = str(toy_llava_dir(ctx) / "model")  # a sweep run's root build when its own folder has none
    else:
        model = ctx.spec.mllm
    train_data = ctx.find_input("preference", method, exists=is_saved_dataset) or ctx.shared_path("preference", method)
    data = {"method": method, "profile": ctx.profile, "seed": ctx.seed, "smoke": ctx.smoke, "model": model,
            "train_data": str(train_data), "output_dir": str(ctx.shared_path("runs", method))}
    return recipe_from_dict(data, overrides)


# ----------------------------------------------------------------------------------------------------------------
# Validation.

def validate(recipe: Recipe) -> None:
    """Raise RecipeError naming the key if the recipe cannot run."""
    if recipe.method not in METHODS:
        raise RecipeError(f"method: {recipe.method!r} is not one of {list(METHODS)}")
    if recipe.profile not in ("toy", "paper"):
        raise RecipeError(f"profile: {recipe.profile!r} is not 'toy' or 'paper'")
    if recipe.lora.r <= 0 or recipe.lora.alpha <= 0:
        raise RecipeError(f"lora.r and lora.alpha must be positive (got {recipe.lora.r}, {recipe.lora.alpha})")
    if not 0 <= recipe.lora.dropout < 1:
        raise RecipeError(f"lora.dropout must be in [0, 1) (got {recipe.lora.dropout})")
    if recipe.lora.projector not in get_args(ProjectorMode):
        raise RecipeError(f"lora.projector: {recipe.lora.projector!r} is not one of {list(get_args(ProjectorMode))}")
    if recipe.hardware.precision not in get_args(Precision):
        raise RecipeError(f"hardware.precision: {recipe.hardware.precision!r} is not one of "
                          f"{list(get_args(Precision))}")
    if recipe.hardware.weights_dtype not in get_args(WeightsDtype):
        raise RecipeError(f"hardware.weights_dtype: {recipe.hardware.weights_dtype!r} is not one of "
                          f"{list(get_args(WeightsDtype))}")
    if recipe.hardware.saved_activations not in get_args(SavedActivations):
        raise RecipeError(f"hardware.saved_activations: {recipe.hardware.saved_activations!r} is not one of "
                          f"{list(get_args(SavedActivations))}")
    if recipe.optim.per_device_batch_size <= 0 or recipe.optim.gradient_accumulation_steps <= 0:
        raise RecipeError("optim.per_device_batch_size and optim.gradient_accumulation_steps must be positive")
    if recipe.optim.max_length is not None and recipe.optim.max_length <= 0:
        raise RecipeError(f"optim.max_length must be positive or null (got {recipe.optim.max_length})")
    losses = recipe.dpo.loss_type if isinstance(recipe.dpo.loss_type, list) else [recipe.dpo.loss_type]
    unknown = [loss for loss in losses if loss not in TRL_DPO_LOSSES]
    if unknown:
        raise RecipeError(f"dpo.loss_type: {unknown} not among TRL's losses {list(TRL_DPO_LOSSES)}")
    if recipe.dpo.loss_weights is not None and len(recipe.dpo.loss_weights) != len(losses):
        raise RecipeError(f"dpo.loss_weights has {len(recipe.dpo.loss_weights)} weights for {len(losses)} losses")
    if recipe.dpo.reference not in get_args(ReferenceMode):
        raise RecipeError(f"dpo.reference: {recipe.dpo.reference!r} is not one of {list(get_args(ReferenceMode))}")
    if recipe.is_dpo and recipe.lora.projector == "outside" and recipe.dpo.reference == "lora":
        raise RecipeError(
            "lora.projector 'outside' with dpo.reference 'lora' makes the reference drift: the adapter-off "
            "reference pass would use the projector as it is being trained, not the starting one. Use "
            "lora.projector 'modules_to_save' (the projector trains as a PEFT copy that adapter-disable also "
            "switches off) or dpo.reference 'cached' (reference log-probs computed once before training)."
        )
    if recipe.merged_dtype not in get_args(WeightsDtype):
        raise RecipeError(f"merged_dtype: {recipe.merged_dtype!r} is not one of {list(get_args(WeightsDtype))}")
    if recipe.resume_from_checkpoint is not None and not isinstance(recipe.resume_from_checkpoint, str):
        raise RecipeError("resume_from_checkpoint must be a checkpoint folder or 'latest'")


# ----------------------------------------------------------------------------------------------------------------
# Dicts, YAML and dotted overrides.

def recipe_to_dict(recipe: Recipe) -> dict:
    return asdict(recipe)


def _build(cls: type, data: dict, where: str) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        section = where.rstrip(".") or "recipe"
        raise RecipeError(f"{section}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise RecipeError(f"{where}{name}: expected a mapping of {hint.__name__} fields, got {value!r}")
            kwargs[name] = _build(hint, value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, f"{where}{name}")
    return cls(**kwargs) if cls is not Recipe else kwargs


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """YAML and the command line give strings and ints; turn them into what the field holds (1e-4 -> float)."""
    if value is None:
        return None
    origin = get_origin(hint)
    options = get_args(hint) if origin is not None else (hint,)
    if origin is Literal:
        if value not in options:
            raise RecipeError(f"{where}: {value!r} is not one of {list(options)}")
        return value
    plain = [o for o in options if o is not type(None)]
    for option in plain:
        if get_origin(option) is list or option is list:
            # "a,b" on the command line is a list; a single word stays a string when the field allows one
            if isinstance(value, str) and ("," in value or str not in plain):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, list):
                inner = get_args(option)
                return [_coerce(v, inner[0], where) for v in value] if inner else value
    if isinstance(value, str):
        if value.lower() in ("none", "null"):
            return None
        for option in plain:
            if option is bool:
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
            elif option in (int, float):
                try:
                    number = float(value)
                except ValueError:
                    continue
                return int(number) if option is int and number == int(number) else number
            elif option is str:
                return value
        raise RecipeError(f"{where}: cannot read {value!r} as {hint}")
    if float in plain and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"override {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def recipe_from_dict(data: dict, overrides: dict[str, Any] | None = None) -> Recipe:
    """A Recipe from a (possibly partial) dict: method and profile pick the defaults, the rest overrides them."""
    data = dict(data or {})
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    method, profile = data.get("method", "dpo"), data.get("profile", "toy")
    merged = _merge(recipe_to_dict(default_recipe(method, profile)), data)
    return Recipe(**_build(Recipe, merged, ""))


def load_recipe(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read a YAML recipe (keys as in `Recipe`, sections lora/optim/hardware/dpo) and apply dotted overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe file {path} does not exist (the shipped ones are under recipes/)")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise RecipeError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise RecipeError(f"{path}: expected a mapping of recipe keys, got {type(data).__name__}")
    try:
        return recipe_from_dict(data, overrides)
    except RecipeError as e:
        raise RecipeError(f"{path or 'recipe'}: {e}") from None


def dump_recipe(recipe: Recipe, path: str | Path | None = None) -> str:
    """YAML text of the full recipe (written to `path` when given); load_recipe reads it back unchanged."""
    text = yaml.safe_dump(json.loads(json.dumps(recipe_to_dict(recipe))), sort_keys=False)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    return text


__all__ = [
    "DPOSpec", "HardwareSpec", "LoraSpec", "METHODS", "OptimSpec", "Recipe", "RecipeError", "SFT_METHODS",
    "TRL_DPO_LOSSES", "default_recipe", "dump_recipe", "load_recipe", "recipe_for_run", "recipe_from_dict",
    "recipe_to_dict", "smoke_settings", "validate",
]
