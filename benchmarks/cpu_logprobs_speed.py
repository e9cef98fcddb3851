"""The CPU log-prob kernel against TRL's chunked kernel: forward + backward time and the largest differences
(a measurement script, not a test).

    .venv/bin/python benchmarks/cpu_logprobs_speed.py [--tokens 344] [--hidden 576] [--vocab 49152] [--repeats 5]

Defaults are the toy DPO benchmark's step (4 pairs, 344 answer tokens, SmolLM2's width and vocabulary); the head
is frozen (LoRA), so only the hidden state gets a gradient, as in training. Each kernel runs `--repeats` times
after one warm-up, interleaved; the fastest run of each is kept.
"""
from __future__ import annotations

import argparse
import time

import torch
from trl.kernels.chunked_logprob import ChunkedLogProbFunction

from mmalign_utils.train.cpu_logprobs import cpu_logprobs

OUTPUTS = ("entropy", "mean_logits", "is_top1")  # what DPOTrainer logs


def run(kernel, hidden, weight, targets, upstream):
    h = hidden.detach().requires_grad_()
    started = time.perf_counter()
    out = kernel(h, weight, targets)
    (out[0] * upstream).sum().backward()
    return time.perf_counter() - started, out, h.grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=344)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.tokens, args.hidden, generator=g)
    weight = torch.randn(args.vocab, args.hidden, generator=g) * args.hidden ** -0.5
    targets = torch.randint(0, args.vocab, (args.tokens,), generator=g)
    upstream = torch.randn(args.tokens, generator=g)
    kernels = {
        "trl chunked": lambda h, w, t: ChunkedLogProbFunction.apply(h, w, None, t, 1.0, 32768, None, 1.0, OUTPUTS),
        "cpu_logprobs": lambda h, w, t: cpu_logprobs(h, w, None, t, OUTPUTS),
    }
    best = {name: float("inf") for name in kernels}
    results = {}
    for _ in range(args.repeats + 1):  # the first round warms up and is kept only if it is the fastest
        for name, kernel in kernels.items():
            seconds, out, grad = run(kernel, hidden, weight, targets, upstream)
            best[name] = min(best[name], seconds)
            results[name] = (out, grad)
    print(f"{args.tokens} tokens, hidden {args.hidden}, vocabulary {args.vocab}, torch threads "
          f"{torch.get_num_threads()}: forward + backward, fastest of {args.repeats + 1}")
    for name in kernels:
        print(f"  {name:13s}: {best[name] * 1000:7.1f} ms")
    print(f"  ratio cpu_logprobs / trl: {best['cpu_logprobs'] / best['trl chunked']:.2f}x")
    (a, ga), (b, gb) = results["trl chunked"], results["cpu_logprobs"]
    print(f"  max |diff|: log-probs {(a[0] - b[0]).abs().max():.2e}, entropy {(a[1] - b[1]).abs().max():.2e}, "
          f"mean logits {(a[3] - b[3]).abs().max():.2e}, top-1 flags differing {int((a[4] != b[4]).sum())}, "
          f"hidden-state gradient {(ga - gb).abs().max():.2e}")


if __name__ == "__main__":
    main()
