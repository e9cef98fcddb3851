"""Which floating-point type the CPU computes in: bf16 where the processor has bf16 instructions, else fp32.

bf16 halves the memory of weights and activations, and on a CPU with native bf16 (AVX512-BF16 or AMX: recent
Intel Xeons, AMD Zen 4 with AVX-512 exposed) oneDNN runs its matmuls about twice as fast as fp32. Without those
instructions PyTorch still computes in bf16, but by converting element by element: on a 2-core AMD EPYC that
exposes only AVX2, bf16 linear layers ran up to 6.5x slower than fp32, SmolLM2 generation 2.4x slower and a LoRA
training step 24x slower (`benchmarks/cpu_dtype_speed.py` prints them side by side). The machines this project runs on differ from one
session to the next, so the toy profile asks the processor instead of assuming.

Every CPU default that used to be bf16 (the toy profile's weights for generation and evaluation, the recipes'
`precision: auto`, the toy LLaVA build's frozen language model) goes through `cpu_compute_dtype()`. Set
`MMALIGN_CPU_DTYPE=bf16` or `=fp32` to force one, e.g. to redo a run made on the other kind of machine
bit for bit. GPUs are not affected: the paper profile keeps bf16.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

ENV_VAR = "MMALIGN_CPU_DTYPE"
_NAMES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}
# /proc/cpuinfo flags of the instructions oneDNN uses for bf16 matmuls without emulation.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str] | None:
    """The processor's feature flags from /proc/cpuinfo, or None where that file does not exist (not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when bf16 matmuls run on bf16 instructions. From the cpuinfo flags on Linux; elsewhere oneDNN's own
    check (which also accepts AVX-512 without bf16 instructions, where bf16 is emulated but vectorised)."""
    flags = cpu_flags()
    if flags is not None:
        return any(flag in flags for flag in NATIVE_BF16_FLAGS)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_compute_dtype() -> torch.dtype:
    """bf16 on a CPU with native bf16, fp32 otherwise; `MMALIGN_CPU_DTYPE` (bf16|fp32) overrides."""
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced:
        if forced not in _NAMES:
            raise ValueError(f"{ENV_VAR}={forced!r}: use bf16 or fp32 (or unset it to let the processor decide)")
        return _NAMES[forced]
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def cpu_uses_bf16() -> bool:
    return cpu_compute_dtype() == torch.bfloat16


__all__ = ["ENV_VAR", "NATIVE_BF16_FLAGS", "cpu_compute_dtype", "cpu_flags", "cpu_has_native_bf16",
           "cpu_uses_bf16"]
