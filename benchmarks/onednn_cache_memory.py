"""Why CPU training memory grew with changing batch shapes; a measurement script, not a test (docs/toy_llava.md).

    .venv/bin/python benchmarks/onednn_cache_memory.py [--steps 40]

Each arm runs in its own process on one thread: `steps` bf16 forward + backward matmuls of (n x 576) activations
against a 49,152 x 576 weight (the toy LLaVA's LM head), with n (300-699) new at every step (as the answer-token count
of a training batch does) or fixed, and oneDNN's kernel cache at its default size, at 64 (what `import
mmalign_utils` sets) or off. Prints the resident memory each arm added.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ARMS = {  # name: (n changes every step, ONEDNN_PRIMITIVE_CACHE_CAPACITY or None for oneDNN's default)
    "changing shape, default cache": (True, None),
    "changing shape, cache 64": (True, "64"),
    "changing shape, no cache": (True, "0"),
    "one shape, default cache": (False, None),
}


def child(vary: bool, steps: int) -> dict:
    import torch

    torch.set_num_threads(1)

    def rss_gb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9

    weight = torch.randn(49152, 576).bfloat16()
    start = rss_gb()
    for i in range(steps):
        # a new row count at every step within a fixed range (37 and 400 are coprime: 400 distinct values)
        h = torch.randn(300 + ((37 * i) % 400 if vary else 0), 576, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = h.bfloat16() @ weight.t()
        out.float().sum().backward()
    return {"added_gb": rss_gb() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--_child", nargs=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        print(json.dumps(child(args._child[0] == "vary", args.steps)))
        return
    for name, (vary, capacity) in ARMS.items():
        env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
        if capacity is not None:
            env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = capacity
        out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--_child",
                              "vary" if vary else "same"], env=env, check=True, capture_output=True, text=True)
        added = json.loads(out.stdout.strip().splitlines()[-1])["added_gb"]
        print(f"{name:32s} +{added:.2f} GB after {args.steps} matmuls", flush=True)


if __name__ == "__main__":
    main()
