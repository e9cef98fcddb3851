"""Option scoring vs free generation on Shapes-POPE: time and agreement (a measurement script, not a test).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/option_scoring_speed.py [MODEL_DIR] [--n 300]

Loads a saved toy LLaVA (default artifacts/toy/toy_llava/model), builds Shapes-POPE (n questions over the three
splits), answers every question twice (by scoring "Yes"/"No"/"yes"/"no" in one forward pass, and by greedy
generation as LLaVA's POPE script did) and prints the seconds of each, the speed ratio, the share of identical
yes/no answers (both read with POPE's official rule) and both mean F1s. Goal: >= 5x faster, >= 99% identical.
"""
from __future__ import annotations

import argparse
import time

import torch

from mmalign_utils.bench import pope
from mmalign_utils.bench.shapes import pope_edition
from mmalign_utils.bench.shapes.runner import answer_requests
from mmalign_utils.models import load_mllm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="artifacts/toy/toy_llava/model")
    parser.add_argument("--n", type=int, default=300, help="questions in all (split evenly over the 3 splits)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32, help="for free generation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model, processor = load_mllm(args.model)
    items = pope_edition.build(n_per_split=args.n // 3, seed=args.seed)
    requests = pope_edition.requests(items)
    print(f"model {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, "
          f"{next(model.parameters()).dtype}), {len(requests)} Shapes-POPE questions, batch size {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}")
    answer_requests(model, processor, requests[:args.batch_size], "score_options", args.batch_size)  # warm-up

    started = time.perf_counter()
    scored = answer_requests(model, processor, requests, "score_options", args.batch_size)
    t_score = time.perf_counter() - started
    started = time.perf_counter()
    generated = answer_requests(model, processor, requests, "generate", args.batch_size,
                                closed_max_new_tokens=args.max_new_tokens)
    t_generate = time.perf_counter() - started

    same = sum(pope.parse_llava(scored[r.id]) == pope.parse_llava(generated[r.id]) for r in requests)
    f1_scored = pope.score(items, scored)["f1_mean"]
    f1_generated = pope.score(items, generated)["f1_mean"]
    examples = sorted({generated[r.id] for r in requests})[:8]
    tokenizer = getattr(processor, "tokenizer", processor)
    mean_tokens = sum(len(tokenizer(generated[r.id], add_special_tokens=False)["input_ids"]) + 1
                      for r in requests) / len(requests)  # + 1: the end-of-turn token
    print(f"option scoring : {t_score:8.2f} s  ({len(requests) / t_score:6.1f} questions/s)  mean F1 {f1_scored:.3f}")
    print(f"free generation: {t_generate:8.2f} s  ({len(requests) / t_generate:6.1f} questions/s)  "
          f"mean F1 {f1_generated:.3f}")
    print(f"speed ratio    : {t_generate / t_score:.1f}x   (goal >= 5x)")
    print(f"identical      : {same}/{len(requests)} = {same / len(requests):.1%}   (goal >= 99%)")
    print(f"generated texts (distinct, first 8): {examples}; mean {mean_tokens:.1f} generated tokens per answer")
    print("(free generation costs one prompt pass plus one step per generated token, so its cost over option "
          "scoring grows with the answer length)")


if __name__ == "__main__":
    main()
