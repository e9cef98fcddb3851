"""Batched generation for base LLMs and MLLMs: left-padded, KV-cached, with a progress bar.

One function serves text-only and image prompts, greedy and sampled decoding:

    answers = generate(model, processor, [Conversation([...], images=[img]), ...], GenerationSettings())

A `Conversation` holds chat messages in the conversational format (content = str or a list of
{"type": "image"} / {"type": "text", "text": ...} parts) and the PIL images its image parts refer to.
The chat template of the processor/tokenizer renders them, so the same call works for the toy
model (ChatML) and LLaVA-1.5 (vicuna_v1).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mmalign_utils.progress import progress_bar
from mmalign_utils.vllm_backend import VLLMEngine


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


def length_sorted_batches(processor, conversations: Sequence[Conversation], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar prompt length (little padding), never mixing text-only and
    image conversations in one batch."""
    order = sorted(range(len(conversations)),
                   key=lambda i: (len(conversations[i].images), len(render_prompt(processor, conversations[i]))))
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and \
                bool(conversations[batches[-1][-1]].images) == bool(conversations[i].images):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


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
    input order. Text-only and image conversations are never mixed in one batch. Greedy answers are the tokens
    HF `generate` picks (tests/test_generate.py); each answer leaves its batch when it ends (`decode`).
    """
    settings = settings or GenerationSettings()
    if settings.num_samples > 1 and settings.greedy:
        raise ValueError("num_samples > 1 needs temperature > 0 (greedy decoding would repeat one answer)")
    if isinstance(model, VLLMEngine):  # GPUs: vLLM serves the same prompts (vllm_backend.py)
        answers = _vllm_answers(model, processor, conversations, settings, progress)
        return answers if settings.num_samples > 1 else [a[0] for a in answers]
    # seed None: the global RNG, so that successive calls draw different samples
    generator = torch.Generator(device="cpu").manual_seed(settings.seed) if settings.seed is not None else None
    k = 1 if settings.greedy else settings.num_samples
    answers = _answer_in_batches(
        model, processor, conversations, k, settings.max_new_tokens, settings.batch_size,
        lambda logits: logits.argmax(-1) if settings.greedy else
        _sample_next(logits, settings.temperature, settings.top_p, generator),
        progress if isinstance(progress, str) else "generating", bool(progress))
    return answers if settings.num_samples > 1 else [a[0] for a in answers]


def _vllm_answers(engine: VLLMEngine, processor, conversations: Sequence[Conversation],
                  settings: GenerationSettings, progress: bool | str) -> list[list[str]]:
    """The rendered prompts and their images, answered by vLLM (lists of num_samples answers)."""
    return engine.generate([render_prompt(processor, c) for c in conversations], [c.images for c in conversations],
                           settings, progress=bool(progress))


def _answer_in_batches(model, processor, conversations: Sequence[Conversation], k: int, max_new_tokens: int,
                       batch_size: int, choose, desc: str, progress: bool) -> list[list[str]]:
    tok = _tokenizer_of(processor)
    device = next(model.parameters()).device
    stop = torch.tensor(_stop_ids(model, tok), device=device)
    results: list[list[str]] = [[] for _ in conversations]
    bar = progress_bar(total=len(conversations), desc=desc, disable=not progress)
    for batch in length_sorted_batches(processor, conversations, batch_size):
        enc = encode_batch(processor, [conversations[i] for i in batch], device)
        tokens = decode(model, enc, k, max_new_tokens, stop, choose)
        texts = [t.strip() for t in tok.batch_decode(tokens, skip_special_tokens=True)]
        for j, i in enumerate(batch):
            results[i] = texts[j * k:(j + 1) * k]
        bar.update(len(batch))
    bar.close()
    return results


@torch.inference_mode()
def decode(model, enc: dict, k: int, max_new_tokens: int, stop: torch.Tensor, choose) -> list[list[int]]:
    """The new tokens of k answers per prompt of a left-padded batch (rows: prompt 0's k answers, then prompt 1's).

    The prompts (and their images) are prefilled once and their key/value cache repeated k times: HF
    `generate(num_return_sequences=k)` copies every prompt k times before the forward pass instead. Rows that
    have emitted a stop token leave the batch (their cache rows are dropped once a quarter of the batch has
    finished): sampled answers to one prompt differ in length several-fold, and a batch that kept them would
    decode every row for as long as its longest answer. `choose(logits) -> token ids` picks each next token
    (arg-max, or `_sample_next`); the stop token ends a row's list.
    """
    from transformers import DynamicCache

    mask = enc["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(**enc, position_ids=positions, cache=DynamicCache(), use_cache=True, logits_to_keep=1)
    cache = out.cache
    if k > 1:
        cache.batch_repeat_interleave(k)
    logits = out.logits[:, -1].repeat_interleave(k, dim=0)
    mask = mask.repeat_interleave(k, dim=0)
    next_pos = positions[:, -1:].repeat_interleave(k, dim=0) + 1
    rows = list(range(logits.shape[0]))  # the answer each batch row belongs to
    tokens: list[list[int]] = [[] for _ in rows]
    done = torch.zeros(len(rows), dtype=torch.bool, device=mask.device)
    for step in range(max_new_tokens):
        nxt = choose(logits).to(mask.device)
        for row, token, finished in zip(rows, nxt.tolist(), done.tolist()):
            if not finished:
                tokens[row].append(token)
        done |= torch.isin(nxt, stop)
        if step + 1 == max_new_tokens or done.all():
            break
        if 4 * int(done.sum()) >= len(rows):  # drop the finished rows from the batch and the cache
            keep = (~done).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            nxt, mask, next_pos = nxt[keep], mask[keep], next_pos[keep]
            rows = [rows[i] for i in keep.tolist()]
            done = done[keep]
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=mask.device)], dim=1)
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos, cache=cache, use_cache=True)
        cache, logits = out.cache, out.logits[:, -1]
        next_pos = next_pos + 1
    return tokens


def _sample_next(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
                 ) -> torch.Tensor:
    """Temperature + nucleus sampling, the rule HF's TemperatureLogitsWarper + TopPLogitsWarper apply."""
    logits = logits.float() / temperature
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        remove = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the smallest set reaching top_p
        sorted_logits[remove] = float("-inf")
        logits = torch.full_like(logits, float("-inf")).scatter(-1, sorted_idx, sorted_logits)
    # drawn on the CPU, where the seeded generator lives, so that GPU runs sample too (and alike for a seed)
    probs = logits.softmax(-1).cpu()
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(logits.device)


def sample_k(
    model,
    processor,
    conversations: Sequence[Conversation],
    k: int = 4,
    temperature: float = 1.2,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool | str = True,
) -> list[list[str]]:
    """k sampled answers per conversation, encoding each prompt (and its image) once (`decode`).
    Defaults follow the paper's sampling (T 1.2, top-p unset); `batch_size` counts prompts, not answers."""
    if isinstance(model, VLLMEngine):
        settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                      num_samples=k, seed=seed)
        return _vllm_answers(model, processor, conversations, settings, progress)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return _answer_in_batches(model, processor, conversations, k, max_new_tokens, batch_size,
                              lambda logits: _sample_next(logits, temperature, top_p, generator),
                              progress if isinstance(progress, str) else "sampling", bool(progress))


# ------------------------------------------------------------------------------------------------------------
# closed-form answers by scoring the options


def _refuse_vllm(model) -> None:
    if isinstance(model, VLLMEngine):
        raise ValueError("option scoring reads the model's own next-token logits; with a vLLM engine answer closed "
                         "questions by free generation (answer_mode='generate'), as the original scripts did")


def _images_key(conversation: Conversation) -> tuple:
    """Equal for conversations whose images have the same pixels (POPE asks about 18 objects per image); an
    image that is not a PIL image only matches itself."""
    return tuple((img.size, img.mode, hashlib.sha1(img.tobytes()).hexdigest()) if hasattr(img, "tobytes")
                 and hasattr(img, "mode") else ("object", id(img)) for img in conversation.images)


def _unpadded_ids(enc: dict) -> list[torch.Tensor]:
    return [ids[mask.bool()] for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]


def _common_prefix_length(rows: Sequence[torch.Tensor]) -> int:
    """Tokens shared at the start of every row, leaving each row at least one token of its own."""
    shortest = min(len(r) for r in rows)
    first = rows[0][:shortest]
    agree = torch.ones(shortest, dtype=torch.bool, device=first.device)
    for r in rows[1:]:
        agree &= r[:shortest] == first
    differ = (~agree).nonzero()
    return min(int(differ[0]) if len(differ) else shortest, shortest - 1)


def _left_padded(rows: Sequence[torch.Tensor], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        ids[i, width - len(r):], mask[i, width - len(r):] = r, 1
    return ids, mask


def _image_inputs(enc: dict) -> dict:
    """What an encoded batch holds beside the token ids and mask (pixel values, image sizes)."""
    return {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}


def _split_by_conversation(enc: dict, conversations: Sequence[Conversation]) -> list[dict] | None:
    """The image inputs of an encoded batch (pixel values, image sizes), one dict per conversation, or None when
    some input is not laid out one row per image (then the caller encodes the conversation again)."""
    counts = [len(c.images) for c in conversations]
    extra = _image_inputs(enc)
    if any(not torch.is_tensor(v) or v.shape[0] != sum(counts) for v in extra.values()):
        return None
    starts = [sum(counts[:j]) for j in range(len(counts))]
    return [{k: v[a:a + n] for k, v in extra.items()} for a, n in zip(starts, counts)]


def _plan_shared_prefixes(model, processor, conversations: Sequence[Conversation], groups: list[list[int]],
                          batch_size: int, device) -> tuple[dict[int, torch.Tensor], dict[int, dict],
                                                            list[tuple[list[int], int]], list[int]]:
    """Token ids of every conversation, the image inputs of each group's first member (kept from the same
    encoding, so no image is processed twice where the processor lays them out one row per image), the groups
    that can share a prefix with its length, and the conversations that cannot (their common prefix would stop
    inside the image tokens)."""
    image_token = getattr(getattr(model, "config", None), "image_token_id", None)
    ids: dict[int, torch.Tensor] = {}
    image_inputs: dict[int, dict] = {}
    firsts = {g[0] for g in groups}
    members = [i for g in groups for i in g]
    for s in range(0, len(members), batch_size):
        chunk = members[s:s + batch_size]
        enc = encode_batch(processor, [conversations[i] for i in chunk], device)
        ids.update(zip(chunk, _unpadded_ids(enc)))
        per_conversation = _split_by_conversation(enc, [conversations[i] for i in chunk])
        if per_conversation is not None:
            image_inputs.update((i, x) for i, x in zip(chunk, per_conversation) if i in firsts)
    usable, unserved = [], []
    for g in groups:
        prefix = _common_prefix_length([ids[i] for i in g])
        if _prefix_can_be_shared(ids[g[0]], prefix, image_token):
            usable.append((g, prefix))
        else:
            unserved.extend(g)
    return ids, image_inputs, usable, unserved


def _prefix_can_be_shared(ids: torch.Tensor, prefix: int, image_token: int | None) -> bool:
    """A shared prefix must be non-empty and hold every image token (the images are encoded with it)."""
    image_at = (ids == image_token).nonzero() if image_token is not None else ids[:0]
    return prefix > 0 and not (len(image_at) and prefix <= int(image_at[-1]))


def _answer_logits_shared(model, processor, conversations: Sequence[Conversation], ids: dict[int, torch.Tensor],
                          image_inputs: dict[int, dict], usable: list[tuple[list[int], int]], batch_size: int,
                          device):
    """(indices, next-token logits) for groups of conversations with the same images (`_plan_shared_prefixes`).

    Each group's common prompt prefix (system prompt, image, the question's first words) runs once, in a
    left-padded batch of up to `batch_size` groups; its key/value cache rows are then gathered for the members
    (one row per member) and only each member's own tokens run, left-padded after its prefix, `batch_size`
    members at a time across groups."""
    import copy

    from transformers import DynamicCache

    pad = _tokenizer_of(processor).pad_token_id
    prefix_of = {b: prefix for b, (_, prefix) in enumerate(usable)}
    usable = [g for g, _ in usable]
    for start in range(0, len(usable), batch_size):
        block = range(start, min(start + batch_size, len(usable)))
        first = [usable[b][0] for b in block]
        if all(i in image_inputs for i in first):
            extra = {k: torch.cat([image_inputs[i][k] for i in first]) for k in image_inputs[first[0]]}
        else:  # the processor's image inputs could not be split per conversation: encode the images again
            extra = _image_inputs(encode_batch(processor, [conversations[i] for i in first], device))
        prefix_ids, prefix_mask = _left_padded([ids[usable[b][0]][:prefix_of[b]] for b in block], pad, device)
        out = model(input_ids=prefix_ids, attention_mask=prefix_mask,
                    position_ids=(prefix_mask.cumsum(-1) - 1).clamp(min=0), cache=DynamicCache(), use_cache=True,
                    logits_to_keep=1, **extra)
        prefix_cache = out.cache
        rows = sorted(((j, i) for j, b in enumerate(block) for i in usable[b]),
                      key=lambda row: len(ids[row[1]]) - prefix_of[block[row[0]]])  # little padding
        size = -(-len(rows) // -(-len(rows) // batch_size))  # equal chunks: 18 rows as 9 + 9, not 16 + 2
        for s in range(0, len(rows), size):
            chunk = rows[s:s + size]
            which = torch.tensor([j for j, _ in chunk], device=device)
            suffix_ids, suffix_mask = _left_padded([ids[i][prefix_of[block[j]]:] for j, i in chunk], pad, device)
            cache = copy.deepcopy(prefix_cache)
            cache.batch_select_indices(which)  # each member's row: a copy of its group's prefix
            mask = torch.cat([prefix_mask[which], suffix_mask], dim=1)
            lengths = torch.tensor([prefix_of[block[j]] for j, _ in chunk], device=device)
            positions = lengths[:, None] + (suffix_mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=suffix_ids, attention_mask=mask, position_ids=positions, cache=cache,
                        use_cache=True, logits_to_keep=1)
            yield [i for _, i in chunk], out.logits[:, -1]


@torch.inference_mode()
def answer_logits(model, processor, conversations: Sequence[Conversation], batch_size: int = 16,
                  share_prefix: bool = True):
    """Yield (indices, logits of the first answer token) for every conversation, in batches. With
    `share_prefix`, conversations with the same images share one pass over their common prompt prefix
    (`_answer_logits_shared`); the rest run whole, left-padded, as `generate` prefills them."""
    _refuse_vllm(model)
    device = next(model.parameters()).device
    alone = list(range(len(conversations)))
    if share_prefix:
        groups: dict[tuple, list[int]] = {}
        for i, conversation in enumerate(conversations):
            groups.setdefault(_images_key(conversation), []).append(i)
        shared = [g for g in groups.values() if len(g) > 1]
        ids, image_inputs, usable, alone = _plan_shared_prefixes(model, processor, conversations, shared,
                                                                 batch_size, device)
        alone += [g[0] for g in groups.values() if len(g) == 1]
        yield from _answer_logits_shared(model, processor, conversations, ids, image_inputs, usable, batch_size,
                                         device)
    subset = [conversations[i] for i in alone]
    for batch in length_sorted_batches(processor, subset, batch_size):
        enc = encode_batch(processor, [subset[j] for j in batch], device)
        positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        logits = model(**enc, position_ids=positions, use_cache=False, logits_to_keep=1).logits[:, -1]
        yield [alone[j] for j in batch], logits


@torch.inference_mode()
def score_options(
    model,
    processor,
    conversations: Sequence[Conversation],
    options: Sequence[str],
    batch_size: int = 16,
    progress: bool | str = False,
    share_prefix: bool = True,
) -> list[int]:
    """Index of the most likely option for each conversation, from one forward pass over the prompt (with
    `share_prefix`, one pass over the prompt prefix that conversations about the same image share, then one over
    each conversation's own tokens: `answer_logits`).

    Options are compared by the log-probability of their first token at the answer position (e.g. "Yes"/"No",
    or "A".."D"), which is what greedy decoding would pick between them when the answer starts with one of them.
    Options must start with different tokens; a clear error says so otherwise.
    """
    _refuse_vllm(model)
    tok = _tokenizer_of(processor)
    first_ids = []
    for opt in options:
        ids = tok(opt, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"option {opt!r} tokenizes to nothing")
        first_ids.append(ids[0])
    if len(set(first_ids)) != len(first_ids):
        raise ValueError(f"options {list(options)} share a first token; score them by free generation instead")
    device = next(model.parameters()).device
    picks: list[int] = [0] * len(conversations)
    # Compare in token-id order: on an exact tie (frequent in bf16) arg-max then picks the lowest token id, as
    # greedy decoding does, whatever order the caller listed the options in.
    by_id = sorted(range(len(options)), key=lambda j: first_ids[j])
    idx = torch.tensor([first_ids[j] for j in by_id], device=device)
    bar = progress_bar(total=len(conversations), desc=progress if isinstance(progress, str) else "scoring options",
                       disable=not progress)
    for batch, logits in answer_logits(model, processor, conversations, batch_size, share_prefix):
        best = logits[:, idx].argmax(-1).tolist()
        for j, i in enumerate(batch):
            picks[i] = by_id[best[j]]
        bar.update(len(batch))
    bar.close()
    return picks
