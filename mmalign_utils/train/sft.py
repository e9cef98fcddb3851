"""SFT, rejection sampling and SteerLM on TRL's SFTTrainer: one trainer, three datasets (paper §4.4-§4.5).

All three are the paper's `finetune_steer.sh` recipe (LR 4e-4, projector 2e-5, 3 epochs, 16 x 2 per device,
cosine, warmup 0.03): only the data differs.

    sft                 preference.build_sft: one gold answer per prompt
    rejection_sampling  preference.build_rejection_sampling: the best of the k sampled answers
    steerlm             preference.build_steerlm: all k answers, each with its own attribute string in the user
                        turn (inference: steer.py)

The loss is on the assistant replies only (`assistant_only_loss`: the chat templates mark replies with
{% generation %}, end token included), as LLaVA trains on answers only.

    result = run_sft(load_recipe("recipes/steerlm_toy.yaml"))
"""
from __future__ import annotations

from typing import Any

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from mmalign_utils.progress import plain_progress
from mmalign_utils.train.peft_setup import (
    ProjectorLRMixin, RunResult, build_lora_config, finalize_trainable,
    load_model_for_training, load_train_dataset, train_and_save, training_arguments,
)
from mmalign_utils.train.recipes import SFT_METHODS, Recipe

SFT_COLUMNS = ("images", "messages")


class AlignSFTTrainer(ProjectorLRMixin, SFTTrainer):
    """SFTTrainer with the projector's own learning rate (and 'outside' projector checkpoints)."""

    def __init__(self, *args, projector_learning_rate: float | None = None, **kwargs):
        self.projector_learning_rate = projector_learning_rate
        super().__init__(*args, **kwargs)


def sft_view(dataset: Dataset, method: str = "sft") -> Dataset:
    """Only `images` and `messages`; checks that every conversation ends with the assistant's answer and that a
    SteerLM dataset carries its attribute strings."""
    missing = [c for c in SFT_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{method} data needs columns {list(SFT_COLUMNS)}; {missing} missing (has "
                         f"{dataset.column_names}). Build it with preference.build_{method}.")
    if method == "steerlm" and "attributes" in dataset.column_names and len(dataset):
        first = dataset[0]
        user_text = " ".join(p.get("text") or "" for p in first["messages"][0]["content"])
        if first["attributes"] not in user_text:
            raise ValueError("steerlm data: the attribute string is not in the user turn of row 0; build the data "
                             "with preference.build_steerlm")
    for i, messages in enumerate(dataset["messages"]):
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError(f"{method} data row {i}: the last turn must be the assistant's answer")
    return dataset.select_columns(list(SFT_COLUMNS))


def sft_config(recipe: Recipe, **overrides: Any) -> SFTConfig:
    return SFTConfig(**{**training_arguments(recipe), "assistant_only_loss": True, **overrides})


def build_sft_trainer(recipe: Recipe, model, processor, train_dataset: Dataset, callbacks: list | None = None,
                      **config_overrides: Any) -> AlignSFTTrainer:
    if recipe.method not in SFT_METHODS:
        raise ValueError(f"build_sft_trainer needs one of {SFT_METHODS}, got {recipe.method!r}")
    trainer = AlignSFTTrainer(
        model=model,
        args=sft_config(recipe, **config_overrides),
        train_dataset=sft_view(train_dataset, recipe.method),
        processing_class=processor,
        peft_config=build_lora_config(model, recipe),
        callbacks=callbacks,
        projector_learning_rate=(recipe.optim.projector_learning_rate if recipe.lora.projector != "frozen" else None),
    )
    finalize_trainable(trainer, recipe)
    return trainer


def run_sft(recipe: Recipe, model=None, processor=None, dataset=None, callbacks: list | None = None,
            save: bool = True, progress: bool = True) -> RunResult:
    """Train SFT / rejection sampling / SteerLM, then save the adapter and the merged model."""
    model, processor = load_model_for_training(recipe, model, processor)
    dataset = load_train_dataset(recipe, dataset)
    trainer = build_sft_trainer(recipe, model, processor, dataset, callbacks, disable_tqdm=not progress or plain_progress())
    return train_and_save(trainer, processor, recipe, save)


__all__ = ["AlignSFTTrainer", "SFT_COLUMNS", "build_sft_trainer", "run_sft", "sft_config", "sft_view"]
