"""Preference-pair batches for image DPO that encode each image once per pair and the prompt once per pair.

TRL's DataCollatorForVisionPreference repeats every image for the chosen and the rejected sequence and
concatenates prompt + answer twice, so the vision tower and the whole prompt (for LLaVA-1.5: 576 image tokens
plus the question) run twice per pair, and twice more for a live reference. `PairCollator` tokenizes exactly as
TRL's collator does (same processor calls, same padding, same `flush_left`, same `keep_start` truncation) and
returns both layouts:

- TRL's: `input_ids`, `attention_mask`, `completion_mask` of shape (2B, L), chosen rows first, which DPOTrainer
  reads for its labels, masks and metrics (no `pixel_values`: nothing may run the tower on 2B images);
- the pair layout: `pair_prompt_ids` / `pair_prompt_mask` (B prompts, left-padded), `pair_pixel_values`
  (B images' pixels), `pair_completion_ids` / `pair_completion_mask` (2B answers, right-padded).

`patch_pair_forward(model)` makes a LlavaForConditionalGeneration understand the pair keys: it computes the
image features of the B images once, then either
- shared prefix (default, without gradient checkpointing): runs the B prompts once with a key/value cache,
  repeats the cache for chosen and rejected (the gradient flows back through it) and runs only the 2B answers;
- image-once (under gradient checkpointing, which drops caches): puts the B image features into the 2B
  concatenated sequences and runs them as TRL does.
The per-token log-probs come from TRL's own chunked log-prob kernel, scattered into TRL's (2B, L-1) layout, so
DPOTrainer's loss types, metrics and live-reference path work unchanged. `pair_sequence_logps` gives the summed
log-probs of a batch on any LLaVA (used to build the reference cache).

Supported: LLaVA-family models (one image token id, features scattered in order); processors that return
`token_type_ids` or `mm_token_type_ids` (Gemma, Qwen-VL) are refused with a clear error.
"""
from __future__ import annotations

import copy
import types
from dataclasses import dataclass
from typing import Any

import torch
from trl.data_utils import apply_chat_template, is_conversational, prepare_multimodal_messages
from trl.kernels import ChunkedLogProbFunction
from trl.trainer.utils import FusedCausalLMOutput, flush_left, maybe_gather_lm_head_ctx, pad

from mmalign_utils.train.cpu_logprobs import cpu_logprobs

try:  # TRL's tile width along the vocabulary; private, so fall back to its 1.16 value
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE as VOCAB_CHUNK
except ImportError:  # pragma: no cover
    VOCAB_CHUNK = 32768

PAIR_KEYS = ("pair_prompt_ids", "pair_prompt_mask", "pair_pixel_values", "pair_completion_ids", "pair_completion_mask")
REF_KEYS = ("ref_chosen_logps", "ref_rejected_logps")
KERNEL_OUTPUTS = ("entropy", "mean_logits", "is_top1")  # what DPOTrainer logs besides log_probs


@dataclass
class PairCollator:
    """Collate preference rows (TRL's conversational or standard vision format) into both layouts.

    carry_reference: also return `ref_chosen_logps` / `ref_rejected_logps` tensors from the rows (cached reference).
    """

    processor: Any
    max_length: int | None = None
    carry_reference: bool = False

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        examples = [copy.copy(example) for example in examples]  # TRL's steps mutate the rows
        for example in examples:
            if "image" in example:
                example["images"] = [example.pop("image")]
        images = [example.get("images") or [] for example in examples]
        has_images = any(images)
        if is_conversational(examples[0]):
            for example, row_images in zip(examples, images):
                example["prompt"] = prepare_multimodal_messages(example["prompt"], images=row_images)
                example["chosen"] = prepare_multimodal_messages(example["chosen"])
                example["rejected"] = prepare_multimodal_messages(example["rejected"])
            examples_text = [apply_chat_template(example, self.processor) for example in examples]
        else:
            examples_text = examples
        prompts = [example["prompt"] for example in examples_text]
        chosens = [example["chosen"] for example in examples_text]
        rejecteds = [example["rejected"] for example in examples_text]

        common = dict(return_tensors="pt", add_special_tokens=False, padding=True)
        # The same processor calls as DataCollatorForVisionPreference, but the prompts and images only once.
        processed_prompts = self.processor(images=images if has_images else None, text=prompts,
                                           padding_side="left", **common)
        for unsupported in ("token_type_ids", "mm_token_type_ids", "image_grid_thw", "pixel_attention_mask"):
            if unsupported in processed_prompts:
                raise NotImplementedError(
                    f"PairCollator supports LLaVA-style processors; this one returns {unsupported!r}. Use TRL's "
                    "DataCollatorForVisionPreference (dpo.shared_prefix: false and dpo.reference: lora).")
        processed_chosens = self.processor(text=chosens, padding_side="right", **common)
        processed_rejecteds = self.processor(text=rejecteds, padding_side="right", **common)

        prompt_ids, prompt_mask = processed_prompts["input_ids"], processed_prompts["attention_mask"]
        pad_token_id = self.processor.tokenizer.pad_token_id or self.processor.tokenizer.eos_token_id
        completion_ids = torch.cat(tuple(pad([processed_chosens["input_ids"], processed_rejecteds["input_ids"]],
                                             padding_value=pad_token_id)))
        completion_mask = torch.cat(tuple(pad([processed_chosens["attention_mask"],
                                               processed_rejecteds["attention_mask"]], padding_value=0)))
        n_rows = prompt_ids.size(0)
        prompt_lengths = prompt_mask.sum(dim=1).repeat(2)
        if self.max_length is not None:
            too_long = (prompt_lengths[:n_rows] >= self.max_length).nonzero().flatten().tolist()
            if too_long:
                raise ValueError(
                    f"rows {too_long} of this batch have prompts of {prompt_lengths[too_long].tolist()} tokens (image "
                    f"tokens included), at least max_length={self.max_length}: truncation would cut image tokens "
                    "and leave no answer. Raise optim.max_length or filter those rows out.")
            # keep_start truncation of prompt + answer = keep the first (max_length - prompt length) answer tokens
            room = (self.max_length - prompt_lengths).unsqueeze(1)
            completion_mask = completion_mask * (torch.arange(completion_ids.size(1)).unsqueeze(0) < room)
            width = int(completion_mask.sum(dim=1).max())
            completion_ids, completion_mask = completion_ids[:, :width], completion_mask[:, :width]

        # TRL's layout, built like DataCollatorForVisionPreference builds it
        trl_ids = torch.cat((prompt_ids.repeat(2, 1), completion_ids), dim=1)
        trl_attention = torch.cat((prompt_mask.repeat(2, 1), completion_mask), dim=1)
        trl_completion = torch.cat((torch.zeros_like(prompt_mask).repeat(2, 1), completion_mask), dim=1)
        trl_attention, trl_ids, trl_completion = flush_left(trl_attention, trl_ids, trl_completion)

        output = {
            "input_ids": trl_ids,
            "attention_mask": trl_attention,
            "completion_mask": trl_completion,
            "pair_prompt_ids": prompt_ids,
            "pair_prompt_mask": prompt_mask,
            "pair_completion_ids": completion_ids,
            "pair_completion_mask": completion_mask,
        }
        if has_images:
            output["pair_pixel_values"] = processed_prompts["pixel_values"]
        if self.carry_reference:
            for key in REF_KEYS:
                values = [example.get(key) for example in examples]
                if any(v is None for v in values):
                    missing = [i for i, v in enumerate(values) if v is None]
                    raise ValueError(f"rows {missing} of this batch have no {key}; attach the reference cache first "
                                     "(ref_cache.attach_reference_logps)")
                output[key] = torch.tensor(values, dtype=torch.float32)
        return output


# ------------------------------------------------------------------------------------------------------------
# The forward.

def _llava_parts(model) -> tuple[Any, Any]:
    """(LlavaModel, lm_head) of a LlavaForConditionalGeneration (PEFT layers are injected in place)."""
    llava = getattr(model, "model", None)
    if llava is None or not hasattr(llava, "language_model") or not hasattr(llava, "get_image_features"):
        raise TypeError(f"{type(model).__name__} is not a LLaVA-style model (model.language_model, "
                        "model.get_image_features); the pair forward supports LLaVA-family models")
    return llava, model.get_output_embeddings()


def _embed_with_images(llava, input_ids: torch.Tensor, pixel_values: torch.Tensor | None, copies: int) -> torch.Tensor:
    """Token embeddings with the image features of `pixel_values` (computed once) put at the image tokens,
    `copies` times in row order (2 for TRL's chosen-then-rejected layout)."""
    embeds = llava.get_input_embeddings()(input_ids)
    if pixel_values is None:
        return embeds
    config = llava.config
    out = llava.get_image_features(pixel_values=pixel_values.to(embeds.device),
                                   vision_feature_layer=config.vision_feature_layer,
                                   vision_feature_select_strategy=config.vision_feature_select_strategy,
                                   return_dict=True)
    features = torch.cat(list(out.pooler_output), dim=0).to(embeds.device, embeds.dtype)
    features = torch.cat([features] * copies, dim=0)
    image_mask = (input_ids == config.image_token_id).unsqueeze(-1).expand_as(embeds)
    if int(image_mask[..., 0].sum()) != features.size(0):
        raise ValueError(f"image features and image tokens do not match: {features.size(0)} features for "
                         f"{int(image_mask[..., 0].sum())} image tokens (max_length too short?)")
    return embeds.masked_scatter(image_mask, features)


def _kernel(hidden: torch.Tensor, lm_head, targets: torch.Tensor, outputs: tuple[str, ...]) -> tuple:
    """Log-probs (and logged statistics) of the answer positions only: TRL's chunked kernel (no (tokens,
    vocabulary) logits tensor) on GPUs, cpu_logprobs on a CPU (0.43x its time there, and right under bf16
    saved activations: train/cpu_logprobs.py)."""
    weight, bias = lm_head.weight, lm_head.bias
    if weight.device.type == "cpu":
        return cpu_logprobs(hidden, weight, bias, targets, outputs)
    try:  # FSDP2 shards parameters as DTensors; the kernel needs the whole head, as in TRL's fused forward
        from torch.distributed.tensor import DTensor

        if isinstance(weight, DTensor):
            weight = weight.full_tensor()
            bias = bias.full_tensor() if bias is not None else None
    except ImportError:  # pragma: no cover
        pass
    # Under ZeRO-3 the head's weight is a 0-size shard outside its own forward: gather it for the direct access
    with maybe_gather_lm_head_ctx(weight, bias):
        return ChunkedLogProbFunction.apply(hidden.to(weight.device), weight, bias, targets.to(weight.device), 1.0,
                                            VOCAB_CHUNK, None, 1.0, outputs)


def _shared_prefix_tokens(model, batch: dict, outputs: tuple[str, ...]) -> tuple:
    """Per-token kernel outputs (flattened over answer tokens, row-major) with the prompt run once per pair."""
    llava, lm_head = _llava_parts(model)
    prompt_ids, prompt_mask = batch["pair_prompt_ids"], batch["pair_prompt_mask"]
    completion_ids, completion_mask = batch["pair_completion_ids"], batch["pair_completion_mask"]
    n_rows = prompt_ids.size(0)
    embeds = _embed_with_images(llava, prompt_ids, batch.get("pair_pixel_values"), copies=1)
    prompt_positions = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)
    prompt_out = llava.language_model(inputs_embeds=embeds, attention_mask=prompt_mask,
                                      position_ids=prompt_positions, use_cache=True)
    cache = prompt_out.cache
    # Chosen rows then rejected rows share their pair's prompt: index the cache (differentiable) rather than
    # recomputing it.
    cache.batch_select_indices(torch.cat([torch.arange(n_rows), torch.arange(n_rows)]).to(prompt_ids.device))
    prompt_lengths = prompt_mask.sum(dim=1).repeat(2)
    answer_positions = prompt_lengths.unsqueeze(1) + torch.arange(completion_ids.size(1), device=prompt_ids.device)
    answer_out = llava.language_model(
        input_ids=completion_ids, attention_mask=torch.cat([prompt_mask.repeat(2, 1), completion_mask], dim=1),
        position_ids=answer_positions, cache=cache, use_cache=True)
    # Answer token t is predicted by the hidden state before it: the last prompt position for t = 0 (prompts are
    # left-padded, so that is the last column), the previous answer token otherwise.
    last_prompt = prompt_out.last_hidden_state[:, -1:].repeat(2, 1, 1)
    predictors = torch.cat([last_prompt, answer_out.last_hidden_state[:, :-1]], dim=1)
    mask = completion_mask.bool()
    return _kernel(predictors[mask], lm_head, completion_ids[mask], outputs)


def _image_once_tokens(model, batch: dict, outputs: tuple[str, ...]) -> tuple:
    """Per-token kernel outputs over TRL's concatenated layout, with the image features computed once per pair."""
    llava, lm_head = _llava_parts(model)
    input_ids, attention_mask, completion_mask = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    embeds = _embed_with_images(llava, input_ids, batch.get("pair_pixel_values"), copies=2)
    hidden = llava(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state
    mask = completion_mask[:, 1:].bool()
    return _kernel(hidden[:, :-1][mask], lm_head, input_ids[:, 1:][mask], outputs)


def _gradient_checkpointing_active(model) -> bool:
    active = getattr(model, "is_activation_checkpointing", None)  # transformers 5 name
    if active is None:
        active = getattr(model, "is_gradient_checkpointing", False)
    return bool(active) and model.training and torch.is_grad_enabled()


def pair_token_outputs(model, batch: dict, shared_prefix: bool = True,
                       outputs: tuple[str, ...] = KERNEL_OUTPUTS) -> tuple:
    """(log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1) for every answer token, flattened row-major.

    shared_prefix falls back to the image-once path under gradient checkpointing (which drops the cache).
    """
    if shared_prefix and not _gradient_checkpointing_active(model):
        return _shared_prefix_tokens(model, batch, outputs)
    return _image_once_tokens(model, batch, outputs)


@torch.no_grad()
def pair_sequence_logps(model, batch: dict, shared_prefix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed answer log-probs (chosen, rejected), each of shape (B,), of a PairCollator batch."""
    log_probs = pair_token_outputs(model, batch, shared_prefix, outputs=())[0].float()
    mask = batch["completion_mask"][:, 1:].bool()
    rows = mask.nonzero()[:, 0].to(log_probs.device)
    sums = torch.zeros(mask.size(0), dtype=torch.float32, device=log_probs.device).index_add_(0, rows, log_probs)
    return sums.chunk(2)


def patch_pair_forward(model, shared_prefix: bool = True, extra_outputs: tuple[str, ...] = ()) -> None:
    """Let `model(..., pair_* keys, labels=..., fused_lm_head=True)` run the pair forward (others pass through).

    Apply it to the LlavaForConditionalGeneration itself (under PEFT: `peft_model.get_base_model()`), after TRL
    added its fused LM head. The result is a FusedCausalLMOutput in TRL's (2B, L-1) layout.
    """
    original_forward = model.forward
    outputs = tuple(dict.fromkeys(KERNEL_OUTPUTS + tuple(extra_outputs)))

    def forward(self, *args, **kwargs):
        if "pair_prompt_ids" not in kwargs:
            return original_forward(*args, **kwargs)
        batch = {key: kwargs.pop(key) for key in [*PAIR_KEYS, "input_ids", "attention_mask"] if key in kwargs}
        labels = kwargs.pop("labels")
        mask = labels[:, 1:] != -100
        batch["completion_mask"] = torch.cat([torch.zeros_like(mask[:, :1]), mask], dim=1).long()
        per_token = pair_token_outputs(self, batch, shared_prefix, outputs)
        fields = [None if x is None else x.new_zeros(mask.shape).masked_scatter(mask.to(x.device), x)
                  for x in per_token]
        log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1 = fields
        loss = -log_probs.sum() / mask.sum().clamp(min=1)
        return FusedCausalLMOutput(loss=loss, log_probs=log_probs, entropy=entropy, log_sum_sq_probs=log_sum_sq_probs,
                                   mean_logits=mean_logits, is_top1=is_top1, label_mask=mask)

    model.forward = types.MethodType(forward, model)


__all__ = ["PAIR_KEYS", "REF_KEYS", "PairCollator", "pair_sequence_logps", "pair_token_outputs", "patch_pair_forward"]
