"""Throughput of our decoding (generate.decode: prompt and image prefilled once, the KV cache repeated k times,
finished answers dropped from the batch) against the plain transformers path (`model.generate`), side by side
on the same prompts in one run.

    # self-sampling as notebook 02 does it: k = 4 answers per ShapesWorld prompt at T 1.2
    .venv/bin/python benchmarks/sampling_speed.py --model artifacts/toy-smoke/toy_llava/model --n-prompts 8
    # greedy text answers (notebook 01's and the evaluations' case), with SmolLM2 alone: no toy LLaVA needed
    .venv/bin/python benchmarks/sampling_speed.py --model smollm2 --greedy --n-prompts 32 --max-new-tokens 200

Rows: ours; HF `generate` on the same batches (`num_return_sequences=k` when sampling: every prompt copied k
times before the forward pass, every row decoded until the batch's longest answer ends); and, when sampling,
HF `generate` one prompt and one sample at a time (`--with-naive`). Tokens are counted by re-tokenising the
answers the same way for every method, so sampled lengths may differ between methods without biasing the rate.
The dtype defaults to the one the toy profile computes in on this CPU (mmalign_utils.precision).
"""
from __future__ import annotations

import argparse
import time

import torch

from mmalign_utils.generate import (Conversation, GenerationSettings, _stop_ids, encode_batch, generate,
                                    length_sorted_batches, sample_k)
from mmalign_utils.precision import cpu_compute_dtype


def count_tokens(tokenizer, answers: list[list[str]]) -> int:
    return sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for group in answers for a in group)


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def hf_generate(model, processor, conversations, k: int, batch_size: int, max_new_tokens: int,
                temperature: float | None, seed: int) -> list[list[str]]:
    """The plain transformers path on our batches: model.generate, greedy or sampled with num_return_sequences."""
    tok = getattr(processor, "tokenizer", processor)
    stop = _stop_ids(model, tok)
    torch.manual_seed(seed)
    answers: list[list[str]] = [[] for _ in conversations]
    for batch in length_sorted_batches(processor, conversations, batch_size):
        enc = encode_batch(processor, [conversations[i] for i in batch], next(model.parameters()).device)
        sampling = dict(do_sample=True, temperature=temperature, top_p=None, top_k=None, num_return_sequences=k) \
            if temperature else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=stop,
                                 pad_token_id=tok.pad_token_id, **sampling)
        texts = [t.strip() for t in tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
        for j, i in enumerate(batch):
            answers[i] = texts[j * k:(j + 1) * k]
    return answers


def load(model_name: str, dtype: torch.dtype):
    if model_name == "smollm2":
        from mmalign_utils.models import load_smollm2
        from mmalign_utils.textsuite.suite import load_text_suite

        model, tok = load_smollm2(dtype)
        return model.eval(), tok, lambda n: [Conversation.user(p.prompt) for p in load_text_suite("heldout")[:n]]
    from mmalign_utils.models import load_mllm
    from mmalign_utils.sampling import shapesworld_prompts

    model, processor = load_mllm(model_name, dtype=dtype)
    return model, processor, lambda n: [Conversation.user(p.question, p.load_image())
                                        for p in shapesworld_prompts(n, seed=0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a saved toy LLaVA folder, a llava-hf model, or smollm2")
    parser.add_argument("--n-prompts", type=int, default=8)
    parser.add_argument("--k", type=int, default=4, help="answers per prompt when sampling")
    parser.add_argument("--greedy", action="store_true", help="one greedy answer per prompt instead of k samples")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--temperature", type=float, default=1.2)
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per batch (both paths)")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float32"],
                        help="default: the toy profile's compute dtype on this CPU")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--with-naive", action="store_true", help="also HF generate one prompt, one sample at a time")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype) if args.dtype else cpu_compute_dtype()
    model, processor, prompts = load(args.model, dtype)
    tokenizer = getattr(processor, "tokenizer", processor)
    conversations = prompts(args.n_prompts)
    k = 1 if args.greedy else args.k
    temperature = None if args.greedy else args.temperature

    # warm-up: first calls pay for lazy initialisation
    generate(model, processor, conversations[:2], GenerationSettings(max_new_tokens=4), progress=False)
    hf_generate(model, processor, conversations[:2], 1, 2, 4, None, 0)

    rows = []
    if args.greedy:
        ours, ours_s = timed(lambda: [[a] for a in generate(
            model, processor, conversations, GenerationSettings(max_new_tokens=args.max_new_tokens,
                                                                batch_size=args.batch_size), progress=False)])
    else:
        ours, ours_s = timed(lambda: sample_k(model, processor, conversations, k=k, temperature=temperature,
                                              max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                              seed=0, progress=False))
    rows.append(("ours (generate.decode)", count_tokens(tokenizer, ours), ours_s))
    hf, hf_s = timed(lambda: hf_generate(model, processor, conversations, k, args.batch_size, args.max_new_tokens,
                                         temperature, 0))
    rows.append(("HF generate, same batches" + ("" if args.greedy else ", num_return_sequences=k"),
                 count_tokens(tokenizer, hf), hf_s))
    if args.with_naive and not args.greedy:
        def naive():
            return [[hf_generate(model, processor, [c], 1, 1, args.max_new_tokens, temperature, i * k + j)[0][0]
                     for j in range(k)] for i, c in enumerate(conversations)]
        out, secs = timed(naive)
        rows.append(("HF generate, one prompt and one sample at a time", count_tokens(tokenizer, out), secs))

    mode = "greedy" if args.greedy else f"k={k}, T={args.temperature}"
    print(f"model {args.model} ({dtype}, {torch.get_num_threads()} threads); {len(conversations)} prompts, {mode}, "
          f"max_new_tokens={args.max_new_tokens}, {args.batch_size} prompts per batch")
    for name, tokens, seconds in rows:
        print(f"  {name:50s} {tokens:6d} tokens in {seconds:7.2f} s = {tokens / seconds:7.1f} tokens/s")
    if args.greedy:
        same = sum(a == b for a, b in zip(ours, hf))
        print(f"  identical greedy answers: {same}/{len(ours)}")
    for name, tokens, seconds in rows[1:]:
        print(f"  speed-up of ours over {name}: {(rows[0][1] / rows[0][2]) / (tokens / seconds):.2f}x tokens/s")


if __name__ == "__main__":
    main()
