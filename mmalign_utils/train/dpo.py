"""Image DPO on TRL's DPOTrainer, the paper's recipe (§4.3): LoRA on the language model, projector at its own
learning rate, vision tower frozen, sigmoid loss with beta 0.1 on summed log-probs, cached reference log-probs.

    result = run_dpo(load_recipe("recipes/dpo_toy.yaml"))

`AlignDPOTrainer` is DPOTrainer plus
- the projector's own optimiser group (peft_setup.ProjectorLRMixin);
- pair batches (pair_batches.PairCollator): each image is encoded once per pair, and with `shared_prefix` the
  prompt runs once for chosen and rejected; the log-probs feed TRL's own loss code, so every TRL loss_type works;
- `reference="cached"`: reference log-probs read from the batch (ref_cache), no reference forward;
  `reference="lora"`: TRL's live LoRA-as-reference (adapters disabled; with the projector in `modules_to_save`
  the adapter-off pass also uses the original projector, so the reference does not drift);
  `reference="dataset"`: ref_chosen_logps / ref_rejected_logps columns already in the data (the paper's file).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers.utils import logging
from trl import DPOConfig, DPOTrainer

from mmalign_utils.formats import trl_preference_view
from mmalign_utils.progress import plain_progress
from mmalign_utils.train.pair_batches import REF_KEYS, PairCollator, patch_pair_forward
from mmalign_utils.train.peft_setup import (
    ProjectorLRMixin, RunResult, build_lora_config, finalize_trainable,
    load_model_for_training, load_train_dataset, resolve_precision, train_and_save,
    training_arguments, training_attention,
)
from mmalign_utils.train.recipes import Recipe
from mmalign_utils.train.ref_cache import RefSettings, attach_reference_logps

logger = logging.get_logger(__name__)


class AlignDPOTrainer(ProjectorLRMixin, DPOTrainer):
    """DPOTrainer with pair batches, a projector learning rate and a cached (or dataset) reference."""

    supports_bf16_saved_activations = True  # the pair forward's CPU log-prob kernel stays right under it (peft_setup)

    def __init__(self, *args, reference: str = "cached", shared_prefix: bool = True,
                 projector_learning_rate: float | None = None, **kwargs):
        if reference not in ("cached", "lora", "dataset"):
            raise ValueError(f"reference must be 'cached', 'lora' or 'dataset', got {reference!r}")
        self.reference = reference
        self.projector_learning_rate = projector_learning_rate
        train_dataset = kwargs.get("train_dataset")
        uses_columns = reference in ("cached", "dataset")
        if uses_columns:
            missing = [c for c in REF_KEYS if train_dataset is None or c not in train_dataset.column_names]
            if missing:
                raise ValueError(f"reference {reference!r} needs columns {missing} in the training data; run "
                                 "ref_cache.attach_reference_logps first")
        config = kwargs.get("args")
        if kwargs.get("data_collator") is None:
            if kwargs.get("processing_class") is None:
                raise ValueError("AlignDPOTrainer needs processing_class= (the model's processor)")
            max_length = config.max_length if config is not None else None
            kwargs["data_collator"] = PairCollator(kwargs["processing_class"], max_length=max_length,
                                                   carry_reference=uses_columns)
        super().__init__(*args, **kwargs)
        if uses_columns:
            # TRL 1.16 reads inputs["ref_*_logps"] when this flag is set; its own precompute (refused for
            # vision data) is never run because args.precompute_ref_log_probs stays False.
            self.precompute_ref_logps = True
        if shared_prefix and self.args.gradient_checkpointing:
            logger.warning("dpo.shared_prefix needs the prompt's key/value cache, which activation checkpointing "
                           "drops: batches run image-once (each image still encoded once per pair) instead.")
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        patch_pair_forward(base, shared_prefix=shared_prefix,
                           extra_outputs=("log_sum_sq_probs",) if self.use_weighting else ())

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self.reference in ("cached", "dataset"):
            self._signature_columns = list(dict.fromkeys([*self._signature_columns, *REF_KEYS]))


def dpo_config(recipe: Recipe, **overrides: Any) -> DPOConfig:
    d = recipe.dpo
    losses = d.loss_type if isinstance(d.loss_type, list) else [d.loss_type]
    kwargs = {
        **training_arguments(recipe),
        "beta": d.beta,
        "loss_type": losses,
        "loss_weights": d.loss_weights,
        "label_smoothing": d.label_smoothing,
        "disable_dropout": d.disable_dropout,
        "precompute_ref_log_probs": False,
        **overrides,
    }
    return DPOConfig(**kwargs)


def reference_settings(recipe: Recipe) -> RefSettings:
    precision = resolve_precision(recipe)
    compute = "bf16" if precision["bf16"] else ("fp16" if precision["fp16"] else "fp32")
    return RefSettings(max_length=recipe.optim.max_length, compute_dtype=compute,
                       shared_prefix=recipe.dpo.shared_prefix)


def default_ref_cache_dir(recipe: Recipe) -> Path:
    if recipe.dpo.ref_cache_dir:
        return Path(recipe.dpo.ref_cache_dir)
    if recipe.train_data and Path(recipe.train_data).is_dir():
        return Path(recipe.train_data) / "ref_logps"  # beside the dataset, reused by every run on it
    return Path(recipe.output_dir) / "ref_logps"  # data given in memory


def prepare_dpo_dataset(recipe: Recipe, dataset, model, processor, progress: bool = True):
    """TRL's columns (images, prompt, chosen, rejected) plus the reference log-probs the recipe asks for."""
    dataset = trl_preference_view(dataset, keep_ref_logps=recipe.dpo.reference == "dataset")
    if recipe.dpo.reference == "dataset":
        for column in REF_KEYS:
            if column not in dataset.column_names or any(v is None for v in dataset[column]):
                raise ValueError(f"dpo.reference 'dataset' needs a complete {column!r} column in {recipe.train_data}")
    if recipe.dpo.reference == "cached":
        state = PartialState()
        device = state.device if torch.cuda.is_available() else torch.device("cpu")
        # Rank 0 computes and writes the cache (moving the model to its GPU only if rows are missing); the other
        # ranks then find every row in it.
        with state.main_process_first(), training_attention(model):
            dataset = attach_reference_logps(dataset, model, processor, default_ref_cache_dir(recipe),
                                             reference_settings(recipe), batch_size=recipe.dpo.ref_batch_size,
                                             device=device, progress=progress and state.is_main_process)
    return dataset


def build_dpo_trainer(recipe: Recipe, model, processor, train_dataset, callbacks: list | None = None,
                      **config_overrides: Any) -> AlignDPOTrainer:
    """The configured trainer (PEFT wrapping done by TRL from our LoRA config)."""
    trainer = AlignDPOTrainer(
        model=model,
        args=dpo_config(recipe, **config_overrides),
        train_dataset=train_dataset,
        processing_class=processor,
        peft_config=build_lora_config(model, recipe),
        callbacks=callbacks,
        reference=recipe.dpo.reference,
        shared_prefix=recipe.dpo.shared_prefix,
        projector_learning_rate=(recipe.optim.projector_learning_rate if recipe.lora.projector != "frozen" else None),
    )
    finalize_trainable(trainer, recipe)
    return trainer


def run_dpo(recipe: Recipe, model=None, processor=None, dataset=None, callbacks: list | None = None,
            save: bool = True, progress: bool = True) -> RunResult:
    """Load (or take) model, processor and data, attach the reference, train, save adapter and merged model."""
    if not recipe.is_dpo:
        raise ValueError(f"run_dpo needs a DPO recipe, got method {recipe.method!r}")
    model, processor = load_model_for_training(recipe, model, processor)
    dataset = prepare_dpo_dataset(recipe, load_train_dataset(recipe, dataset), model, processor, progress)
    trainer = build_dpo_trainer(recipe, model, processor, dataset, callbacks,
                                disable_tqdm=not progress or plain_progress())
    return train_and_save(trainer, processor, recipe, save)


__all__ = ["AlignDPOTrainer", "build_dpo_trainer", "default_ref_cache_dir", "dpo_config", "prepare_dpo_dataset",
           "reference_settings", "run_dpo"]
