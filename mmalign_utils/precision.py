"""Which floating-point type the CPU computes in: bf16 where the processor has bf16 instructions and bf16 is
measurably faster there, else fp32.

bf16 halves the memory of weights and activations, and on a CPU with native bf16 (AVX512-BF16 or AMX: recent
Intel Xeons, AMD Zen 4 with AVX-512 exposed) oneDNN runs its matmuls about twice as fast as fp32. Without those
instructions PyTorch still computes in bf16, but by converting element by element: on a 2-core AMD EPYC that
exposes only AVX2, bf16 linear layers ran up to 6.5x slower than fp32, SmolLM2 generation 2.4x slower and a LoRA
training step 24x slower (`benchmarks/cpu_dtype_speed.py` prints them side by side). The machines this project runs on differ from one
session to the next, so the toy profile asks the processor instead of assuming.

bf16 instructions are not enough: on the seventeenth session's Intel Xeon (avx512_bf16, no AMX) fp32 was the
faster of the two (the MLP's 2048 x 576 -> 1536 matmul 1.7x, a LoRA training step 1.13x, generation 1.06x). So
where the flags promise native bf16, `cpu_compute_dtype` also times that matmul once in both dtypes (best of five,
under a second) and takes bf16 only when it is at least `BF16_MIN_SPEEDUP` times faster. The verdict is kept in
`{MMALIGN_CACHE or ~/.cache/mmalign}/cpu_dtype.json`, keyed by processor, flags, torch version and thread count,
so every process on a machine computes in the same dtype.

Every CPU default that used to be bf16 (the toy profile's weights for generation and evaluation, the recipes'
`precision: auto`, the toy LLaVA build's frozen language model) goes through `cpu_compute_dtype()`. Set
`MMALIGN_CPU_DTYPE=bf16` or `=fp32` to force one, e.g. to redo a run made on the other kind of machine
bit for bit. GPUs are not affected: the paper profile keeps bf16.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import time
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


# bf16 must beat fp32 by this factor on the probe: a bare win inside timing noise is not worth bf16's rounding.
BF16_MIN_SPEEDUP = 1.15
_PROBE_SHAPE = (2048, 576, 1536)  # a training batch through SmolLM2's MLP up-projection


def probe_bf16_speedup(repeats: int = 5) -> float:
    """fp32 time / bf16 time of one (2048 x 576) @ (576 x 1536) matmul on this CPU, each the best of `repeats`."""
    rows, k, n = _PROBE_SHAPE
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, w = torch.randn(rows, k).to(dtype), torch.randn(k, n).to(dtype)
        x @ w  # warm-up: oneDNN builds its kernel on the first call of a shape
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            x @ w
            times.append(time.perf_counter() - started)
        best[dtype] = min(times)
    return best[torch.float32] / best[torch.bfloat16]


def _machine_key() -> str:
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    flags = " ".join(sorted(cpu_flags() or ()))
    raw = f"{model}|{flags}|{torch.__version__}|{torch.get_num_threads()}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@functools.cache
def measured_bf16_speedup() -> float:
    """`probe_bf16_speedup()` for this machine, measured once and kept in the cache folder's cpu_dtype.json."""
    from mmalign_utils.config import cache_dir

    path, key = cache_dir() / "cpu_dtype.json", _machine_key()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = {"bf16_speedup": probe_bf16_speedup(), "probe": "x".join(map(str, _PROBE_SHAPE)),
                      "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        path.write_text(json.dumps(known, indent=1))
    return float(known[key]["bf16_speedup"])


def cpu_compute_dtype() -> torch.dtype:
    """bf16 on a CPU with native bf16 where bf16 is at least BF16_MIN_SPEEDUP times faster than fp32 (measured
    once per machine), fp32 otherwise; `MMALIGN_CPU_DTYPE` (bf16|fp32) overrides."""
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced:
        if forced not in _NAMES:
            raise ValueError(f"{ENV_VAR}={forced!r}: use bf16 or fp32 (or unset it to let the processor decide)")
        return _NAMES[forced]
    if not cpu_has_native_bf16():
        return torch.float32
    return torch.bfloat16 if measured_bf16_speedup() >= BF16_MIN_SPEEDUP else torch.float32


def cpu_uses_bf16() -> bool:
    return cpu_compute_dtype() == torch.bfloat16


__all__ = ["BF16_MIN_SPEEDUP", "ENV_VAR", "NATIVE_BF16_FLAGS", "cpu_compute_dtype", "cpu_flags",
           "cpu_has_native_bf16", "cpu_uses_bf16", "measured_bf16_speedup", "probe_bf16_speedup"]
