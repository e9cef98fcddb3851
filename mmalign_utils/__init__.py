"""mmalign: reproduce and extend "Multi-modal Preference Alignment Remedies Degradation of Visual
Instruction Tuning on Language Models" (Li, Lin, Pei, ACL 2024) with a toy offline profile and a paper profile."""

import os

# On the CPU, PyTorch's bf16 matmuls go through oneDNN, which keeps up to 1024 compiled kernels with their buffers,
# one per matmul shape. Training batches change shape at nearly every step (sequence length, answer tokens), so a
# training process's memory grew for hundreds of steps: toy VIT stage 2 went from 4.8 to 12.4 GB in 48 steps and
# reached 18 GB. With 64 kept, the same stage 2 levelled off at about 10.5 GB and ran no slower (docs/toy_llava.md;
# benchmarks/onednn_cache_memory.py).
# oneDNN reads this when it first builds a kernel, so it must be set before any bf16 matmul runs; a value already
# in the environment wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")

__version__ = "0.1.0"
