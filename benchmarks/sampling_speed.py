"""Throughput of self-sampling: k answers per prompt with the prompt encoded once (generate.sample_k) against a
naive loop of single generate() calls (one prompt, one sample at a time), on the same ShapesWorld prompts.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/sampling_speed.py --model artifacts/toy-smoke/toy_llava/model \
        --n-prompts 8 --k 4 --max-new-tokens 64

Prints generated tokens per second of each method and the ratio (goal: sample_k >= 3x the naive loop). Tokens are
counted by re-tokenizing the answers, the same way for every method, so the sampled lengths may differ between
methods without biasing the rate. `--with-hf-batched` adds HF generate(num_return_sequences=k) in batches.
"""
from __future__ import annotations

import argparse
import time

import torch

from mmalign_utils.generate import Conversation, GenerationSettings, generate, sample_k
from mmalign_utils.models import load_mllm
from mmalign_utils.sampling import shapesworld_prompts


def count_tokens(tokenizer, answers: list[list[str]]) -> int:
    return sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for group in answers for a in group)


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a saved toy LLaVA folder or a llava-hf model")
    parser.add_argument("--n-prompts", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.2)
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per sample_k batch")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--with-hf-batched", action="store_true")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    model, processor = load_mllm(args.model, dtype=getattr(torch, args.dtype), device=args.device)
    tokenizer = getattr(processor, "tokenizer", processor)
    prompts = shapesworld_prompts(args.n_prompts, seed=0)
    conversations = [Conversation.user(p.question, p.load_image()) for p in prompts]
    common = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature)

    # warm-up: first calls pay for lazy initialisation
    sample_k(model, processor, conversations[:1], k=2, max_new_tokens=4, progress=False)
    generate(model, processor, conversations[:1], GenerationSettings(max_new_tokens=4, temperature=1.0, seed=0),
             progress=False)

    rows = []
    fast, fast_s = timed(lambda: sample_k(model, processor, conversations, k=args.k, batch_size=args.batch_size,
                                          seed=0, progress=False, **common))
    rows.append(("sample_k (prompt encoded once)", count_tokens(tokenizer, fast), fast_s))

    def naive_loop():
        answers = []
        for i, conversation in enumerate(conversations):
            answers.append([generate(model, processor, [conversation],
                                     GenerationSettings(batch_size=1, seed=i * args.k + j, **common),
                                     progress=False)[0] for j in range(args.k)])
        return answers

    naive, naive_s = timed(naive_loop)
    rows.append(("naive loop of single generate() calls", count_tokens(tokenizer, naive), naive_s))
    if args.with_hf_batched:
        hf, hf_s = timed(lambda: generate(model, processor, conversations,
                                          GenerationSettings(num_samples=args.k, batch_size=args.batch_size, seed=0,
                                                             **common), progress=False))
        rows.append(("HF generate(num_return_sequences=k), batched", count_tokens(tokenizer, hf), hf_s))

    print(f"model {args.model} ({args.dtype}, {args.device}, {torch.get_num_threads()} threads); "
          f"{args.n_prompts} prompts x k={args.k}, T={args.temperature}, max_new_tokens={args.max_new_tokens}")
    for name, tokens, seconds in rows:
        print(f"  {name:46s} {tokens:6d} tokens in {seconds:7.2f} s = {tokens / seconds:8.1f} tokens/s")
    ratio = (rows[0][1] / rows[0][2]) / (rows[1][1] / rows[1][2])
    print(f"  speed-up of sample_k over the naive loop: {ratio:.2f}x (goal >= 3x)")


if __name__ == "__main__":
    main()
