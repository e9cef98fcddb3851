"""Dry run: check a paper-profile recipe on LLaVA-1.5-7B / 13B shapes without weights, a GPU or a download.

`dry_run(recipe)` builds LlavaForConditionalGeneration from the known dimensions (CLIP ViT-L/14-336 + 2-layer GELU
projector + Vicuna-1.5 7B/13B, as llava-hf/llava-1.5-{7b,13b}-hf) on the meta device, wraps it with the recipe's
LoRA exactly as the trainers do, and reports parameter counts, the optimiser groups and an estimate of the memory
per GPU for plain DDP, ZeRO-2 and ZeRO-3. Nothing is allocated and nothing is downloaded.

    python -m mmalign_utils.train.launch recipes/dpo_paper.yaml --dry-run
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from peft import get_peft_model
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, Trainer

from mmalign_utils.train.peft_setup import (
    PROJECTOR_KEY, VISION_KEY, build_lora_config, describe_param_groups, param_groups, trainable_summary,
    unfreeze_projector_outside_peft,
)
from mmalign_utils.train.recipes import Recipe

# Vicuna-1.5 (Llama-2 architecture) as in llava-hf/llava-1.5-{7b,13b}-hf: vocabulary 32000 + <image> + <pad>,
# padded to 32064.
VICUNA_SHAPES: dict[str, dict[str, int]] = {
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32},
    "13b": {"hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40, "num_attention_heads": 40},
}
LLAVA_VOCAB = 32064
IMAGE_TOKEN_INDEX = 32000
IMAGE_TOKENS = 576  # (336 / 14)^2 patches; the CLS token is dropped ("default" strategy)
BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


def llava15_config(size: str = "13b") -> LlavaConfig:
    """LlavaConfig of LLaVA-1.5-7B or -13B from known dimensions (CLIP ViT-L/14 at 336 px, feature layer -2)."""
    if size not in VICUNA_SHAPES:
        raise ValueError(f"size must be one of {list(VICUNA_SHAPES)}, got {size!r}")
    shape = VICUNA_SHAPES[size]
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    text = LlamaConfig(**shape, num_key_value_heads=shape["num_attention_heads"], vocab_size=LLAVA_VOCAB,
                       max_position_embeddings=4096, rms_norm_eps=1e-5, pad_token_id=32001, bos_token_id=1,
                       eos_token_id=2, tie_word_embeddings=False)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN_INDEX,
                       vision_feature_layer=-2, vision_feature_select_strategy="default",
                       image_seq_length=IMAGE_TOKENS, projector_hidden_act="gelu", tie_word_embeddings=False)


def model_size_of(recipe: Recipe) -> str:
    """"7b" or "13b" from the recipe's model name (the paper's default is 13B)."""
    name = recipe.model.lower()
    return "7b" if "7b" in name else "13b"


@dataclass
class DryRunReport:
    model_size: str
    parameters: dict[str, int]
    optimizer_groups: list[dict]
    frozen_parts_trainable: list[str]  # names of vision-tower / base weights left trainable (should be empty)
    memory_gib: dict[str, dict[str, float]]  # per-GPU estimate for each parallel layout
    assumptions: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        p = self.parameters
        lines = [f"LLaVA-1.5-{self.model_size.upper()} on the meta device (nothing allocated or downloaded)",
                 f"  parameters: base model {p['base_model']:,}; with LoRA and the projector copy {p['total']:,}",
                 f"  trainable {p['trainable']:,} ({100 * p['trainable'] / p['base_model']:.2f} % of the base) = "
                 f"LoRA {p['lora']:,} + projector {p['projector']:,}"]
        lines.append("  optimiser groups:")
        for g in self.optimizer_groups:
            lines.append(f"    {g['group']:<20} lr {g['lr']:<8g} weight decay {g['weight_decay']:<6g} "
                         f"{g['params']:>13,} params in {g['tensors']} tensors")
        if self.frozen_parts_trainable:
            lines.append(f"  WARNING: frozen parts left trainable: {self.frozen_parts_trainable[:5]}")
        lines.append(f"  estimated memory per GPU (GiB), {self.assumptions['n_gpus']} GPUs, "
                     f"{self.assumptions['sequences_per_gpu']} sequences of {self.assumptions['seq_len']} tokens:")
        for layout, parts in self.memory_gib.items():
            detail = ", ".join(f"{k} {v:.1f}" for k, v in parts.items() if k != "total")
            lines.append(f"    {layout:<6} total {parts['total']:6.1f}  ({detail})")
        return "\n".join(lines)


def _frozen_but_trainable(model: torch.nn.Module) -> list[str]:
    bad = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_lora = "lora_" in name
        is_projector = PROJECTOR_KEY in name
        if VISION_KEY in name or not (is_lora or is_projector):
            bad.append(name)
    return bad


def estimate_memory(recipe: Recipe, parameters: dict[str, int], hidden_size: int, num_layers: int,
                    n_gpus: int = 4, seq_len: int | None = None) -> tuple[dict[str, dict[str, float]], dict]:
    """Per-GPU memory (GiB) for DDP, ZeRO-2 and ZeRO-3: weights, trainable state, activations.

    - frozen weights in the recipe's weights dtype (bf16 for the paper); sharded over the GPUs under ZeRO-3;
    - trainable weights: fp32 master + fp32 gradient + AdamW's two fp32 moments = 16 bytes/param (gradients and
      optimiser states sharded from ZeRO-2 on);
    - activations: 34 x sequence x hidden bytes per layer and sequence in bf16 with SDPA/flash attention (no
      seq^2 term; Korthikanti et al. 2022), or only each layer's 2-byte input with gradient checkpointing plus one
      layer's full activations; DPO runs 2 sequences per pair; a cached reference adds no forward, a LoRA
      reference only a no-grad one (transient, about one layer).
    """
    weight_bytes = BYTES.get(recipe.hardware.weights_dtype if recipe.hardware.weights_dtype != "auto" else "bf16", 2)
    frozen = parameters["total"] - parameters["trainable"]
    sequences = recipe.optim.per_device_batch_size * (2 if recipe.is_dpo else 1)
    seq_len = seq_len or recipe.optim.max_length or 2048
    per_layer_full = 34 * seq_len * hidden_size * sequences
    if recipe.hardware.gradient_checkpointing:
        activations = num_layers * 2 * seq_len * hidden_size * sequences + per_layer_full
    else:
        activations = num_layers * per_layer_full
    gib = 1024 ** 3
    trainable_state = 16 * parameters["trainable"]
    layouts = {}
    for layout, shard_weights, shard_state in (("ddp", 1, 1), ("zero2", 1, n_gpus), ("zero3", n_gpus, n_gpus)):
        trainable_weights = 4 * parameters["trainable"] / shard_weights
        parts = {
            "frozen_weights": frozen * weight_bytes / shard_weights / gib,
            "trainable_weights": trainable_weights / gib,
            "grads_and_adam": (trainable_state - 4 * parameters["trainable"]) / shard_state / gib,
            "activations": activations / gib,
        }
        parts["total"] = sum(parts.values())
        layouts[layout] = parts
    assumptions = {"n_gpus": n_gpus, "seq_len": seq_len, "sequences_per_gpu": sequences,
                   "weights_bytes": weight_bytes, "gradient_checkpointing": recipe.hardware.gradient_checkpointing,
                   "reference": recipe.dpo.reference if recipe.is_dpo else None}
    return layouts, assumptions


def dry_run(recipe: Recipe, size: str | None = None, n_gpus: int = 4, seq_len: int | None = None) -> DryRunReport:
    """Build the recipe's model shape on the meta device with its LoRA; report parameters, groups and memory."""
    size = size or model_size_of(recipe)
    config = llava15_config(size)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    base_total = sum(p.numel() for p in model.parameters())
    peft_model = get_peft_model(model, build_lora_config(model, recipe))
    if recipe.lora.projector == "outside":
        unfreeze_projector_outside_peft(peft_model)
    elif recipe.lora.projector == "frozen":
        for name, param in peft_model.named_parameters():
            if PROJECTOR_KEY in name:
                param.requires_grad_(False)
    parameters = trainable_summary(peft_model)
    # The base model's own count (PEFT adds LoRA matrices and the projector copy on top)
    parameters["base_model"] = base_total
    # The Trainer's own rule for which weights get weight decay (it does not use `self`)
    decay = set(Trainer.get_decay_parameter_names(None, peft_model))
    groups = param_groups(peft_model, recipe.optim.learning_rate, recipe.optim.projector_learning_rate,
                          recipe.optim.weight_decay, decay_names=decay)
    memory, assumptions = estimate_memory(recipe, parameters, config.text_config.hidden_size,
                                          config.text_config.num_hidden_layers, n_gpus, seq_len)
    return DryRunReport(model_size=size, parameters=parameters, optimizer_groups=describe_param_groups(groups),
                        frozen_parts_trainable=_frozen_but_trainable(peft_model), memory_gib=memory,
                        assumptions=assumptions)


__all__ = ["DryRunReport", "VICUNA_SHAPES", "dry_run", "estimate_memory", "llava15_config", "model_size_of"]
