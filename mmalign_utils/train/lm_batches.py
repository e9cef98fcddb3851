"""Turn chat conversations (with images) into training batches with assistant-only labels.

The chat template marks assistant replies with {% generation %}, so the tokenizer returns the mask of reply
tokens; each single `<image>` token is then expanded into the model's `image_seq_length` copies (what
LlavaProcessor does to the text) with the mask off, and labels are -100 everywhere but the replies.
Doing the expansion here instead of through the processor keeps the mask exact and tokenizes once.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class ChatExample:
    messages: list[dict]
    images: list[Any] = field(default_factory=list)


@dataclass
class PlainCaption:
    """LLaVA's stage-1 ("plain") format: BOS, the image, then its caption; no chat template, no instruction.

    LLaVA-1.5 pretrains the projector on `<image>` + caption + separator with loss on the caption only; the
    chat template only arrives in stage 2. Besides being the recipe, it halves the stage's tokens."""
    caption: str
    image: Any


def image_tokens_per_image(processor) -> int:
    """How many tokens one image expands to, asked of the processor itself (9 for the toy, 576 for LLaVA-1.5)."""
    cached = getattr(processor, "_mmalign_image_tokens", None)
    if cached is None:
        from PIL import Image

        size = processor.image_processor.size
        side = size.get("height") or size.get("shortest_edge") or 64
        probe = processor(text=processor.image_token, images=[Image.new("RGB", (side, side))], return_tensors="pt")
        image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
        cached = int((probe["input_ids"] == image_id).sum())
        processor._mmalign_image_tokens = cached
    return cached


def tokenize_example(processor, example: ChatExample | PlainCaption, max_length: int | None = None
                     ) -> tuple[list[int], list[int]]:
    """input_ids and labels (-100 outside assistant replies) with image tokens expanded."""
    tok = processor.tokenizer
    if isinstance(example, PlainCaption):
        # LLaVA's tokenizer puts <s> before the image. A first token the model knows matters: LMs park attention
        # on it (an "attention sink"); an image embedding in that place disturbs every later position.
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        image_ids = [tok.convert_tokens_to_ids(processor.image_token)] * image_tokens_per_image(processor)
        text_ids = tok(example.caption, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        return bos + image_ids + text_ids, [-100] * (len(bos) + len(image_ids)) + text_ids
    enc = tok.apply_chat_template(example.messages, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True, add_generation_prompt=False)
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    n_image = image_tokens_per_image(processor)
    ids, labels = [], []
    for token, keep in zip(enc["input_ids"], enc["assistant_masks"]):
        if token == image_id:
            ids.extend([image_id] * n_image)
            labels.extend([-100] * n_image)
        else:
            ids.append(token)
            labels.append(token if keep else -100)
    n_images_in_text = sum(1 for t in enc["input_ids"] if t == image_id)
    if n_images_in_text != len(example.images):
        raise ValueError(f"conversation has {n_images_in_text} <image> parts but {len(example.images)} images: "
                         f"{example.messages!r:.200}")
    if max_length is not None and len(ids) > max_length:
        # Truncating would cut image tokens or replies; refuse instead of training on a broken example.
        raise ValueError(f"example of {len(ids)} tokens exceeds max_length={max_length}; filter it out first")
    return ids, labels


def collate(processor, examples: Sequence[ChatExample | PlainCaption], pad_to_multiple_of: int | None = None) -> dict:
    """Right-padded batch: input_ids, attention_mask, labels, pixel_values (if any images)."""
    tok = processor.tokenizer
    pairs = [tokenize_example(processor, ex) for ex in examples]
    longest = max(len(ids) for ids, _ in pairs)
    if pad_to_multiple_of:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    pad = tok.pad_token_id
    input_ids = torch.full((len(pairs), longest), pad, dtype=torch.long)
    labels = torch.full((len(pairs), longest), -100, dtype=torch.long)
    attention = torch.zeros((len(pairs), longest), dtype=torch.long)
    for row, (ids, labs) in enumerate(pairs):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, :len(labs)] = torch.tensor(labs)
        attention[row, :len(ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    images = [img for ex in examples for img in (ex.images if isinstance(ex, ChatExample) else [ex.image])]
    if images:
        batch["pixel_values"] = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    return batch


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng, group_batches: int = 16) -> list[list[int]]:
    """One epoch of batches whose members have similar lengths, in random order (the idea of HF's
    group_by_length): shuffle, cut into groups of `group_batches` batches, sort each group by length, split.

    Right padding to the longest member costs compute for nothing; on the toy VIT mix (lengths 40-355 tokens)
    random batches are about 40% padding, grouped ones a few percent. Which examples share a batch is still
    random across epochs, and the batch order is shuffled so lengths do not follow a pattern over steps.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    group = batch_size * group_batches
    for start in range(0, len(order), group):
        chunk = sorted(order[start:start + group], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def answer_only_loss(model, batch: dict) -> torch.Tensor:
    """Mean next-token cross-entropy over reply tokens, computing the LM head only where there are labels.

    The LM head (vocabulary 49k) is a fifth of the toy model's compute; prompt and image positions need no
    logits, so only the labelled positions go through it.
    """
    labels = batch["labels"]
    # Under PEFT the LoRA layers are injected in place, so the unwrapped model runs with its adapters.
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    out = inner.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      pixel_values=batch.get("pixel_values"))
    hidden = out.last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    mask = targets != -100
    logits = inner.lm_head(hidden[mask])
    return torch.nn.functional.cross_entropy(logits.float(), targets[mask])
