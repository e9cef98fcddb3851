"""Batched generation for base LLMs and MLLMs: left-padded, KV-cached, with a progress bar.

One function serves text-only and image prompts, greedy and sampled decoding:

    answers = generate(model, processor, [Conversation([...], images=[img]), ...], GenerationSettings())

A `Conversation` holds chat messages in the conversational format (content = str or a list of
{"type": "image"} / {"type": "text", "text": ...} parts) and the PIL images its image parts refer to.
The chat template of the processor/tokenizer renders them, so the same call works for the toy
model (ChatML) and LLaVA-1.5 (vicuna_v1).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm


@dataclass
class Conversation:
    messages: list[dict]
    images: list[Any] = field(default_factory=list)

    @classmethod
    def user(cls, text: str, image: Any | None = None, system: str | None = None) -> Conversation:
        """A single user turn, optionally with one image placed before the text (LLaVA's layout)."""
        content: Any = [{"type": "image"}, {"type": "text", "text": text}] if image is not None else text
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
        return cls(messages=messages, images=[image] if image is not None else [])


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 (or below 1e-4, FastChat's rule) means greedy
    top_p: float = 1.0
    num_samples: int = 1  # answers per conversation (sampled decoding only)
    batch_size: int = 16
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-4


def _tokenizer_of(processor) -> Any:
    return getattr(processor, "tokenizer", processor)


def render_prompt(processor, conversation: Conversation) -> str:
    """The exact prompt string the model sees (chat template + generation prompt)."""
    return processor.apply_chat_template(conversation.messages, add_generation_prompt=True, tokenize=False)


def encode_batch(processor, conversations: Sequence[Conversation], device: str | torch.device = "cpu") -> dict:
    """Tokenize a batch, left-padded; pixel values only when the batch has images."""
    tok = _tokenizer_of(processor)
    texts = [render_prompt(processor, c) for c in conversations]
    images = [img for c in conversations for img in c.images]
    old_side = tok.padding_side
    tok.padding_side = "left"  # generation appends on the right, so pad on the left
    try:
        if images:
            enc = processor(images=images, text=texts, return_tensors="pt", padding=True, add_special_tokens=False)
        else:
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tok.padding_side = old_side
    return {k: v.to(device) for k, v in enc.items()}


def _stop_ids(model, tok) -> list[int]:
    ids = {tok.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif isinstance(gen_eos, (list, tuple)):
        ids.update(gen_eos)
    return sorted(i for i in ids if i is not None)


@torch.inference_mode()
def generate(
    model,
    processor,
    conversations: Sequence[Conversation],
    settings: GenerationSettings | None = None,
    progress: bool | str = True,
) -> list[str] | list[list[str]]:
    """Answer every conversation. Returns one string per conversation, or a list of `num_samples` strings
    when num_samples > 1.

    Conversations are sorted by prompt length and batched so that padding stays small; the output order is the
    input order. Text-only and image conversations are never mixed in one batch.
    """
    settings = settings or GenerationSettings()
    if settings.num_samples > 1 and settings.greedy:
        raise ValueError("num_samples > 1 needs temperature > 0 (greedy decoding would repeat one answer)")
    tok = _tokenizer_of(processor)
    device = next(model.parameters()).device
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    order = sorted(range(len(conversations)),
                   key=lambda i: (len(conversations[i].images), len(render_prompt(processor, conversations[i]))))
    results: list[Any] = [None] * len(conversations)
    batches, current = [], []
    for i in order:
        if current and (len(current) == settings.batch_size
                        or bool(conversations[current[-1]].images) != bool(conversations[i].images)):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    desc = progress if isinstance(progress, str) else "generating"
    bar = tqdm(total=len(conversations), desc=desc, disable=not progress)
    stop = _stop_ids(model, tok)
    for batch in batches:
        enc = encode_batch(processor, [conversations[i] for i in batch], device)
        kwargs: dict[str, Any] = dict(max_new_tokens=settings.max_new_tokens, eos_token_id=stop,
                                      pad_token_id=tok.pad_token_id)
        if settings.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=None,
                          num_return_sequences=settings.num_samples)
        out = model.generate(**enc, **kwargs)
        new_tokens = out[:, enc["input_ids"].shape[1]:]
        texts = tok.batch_decode(new_tokens, skip_special_tokens=True)
        texts = [t.strip() for t in texts]
        k = settings.num_samples if not settings.greedy else 1
        for j, i in enumerate(batch):
            chunk = texts[j * k:(j + 1) * k]
            results[i] = chunk if settings.num_samples > 1 else chunk[0]
        bar.update(len(batch))
    bar.close()
    return results
