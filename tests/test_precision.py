"""The CPU compute dtype: bf16 only where the processor has bf16 instructions and bf16 measured faster, fp32
elsewhere."""
import json

import pytest
import torch

from mmalign_utils import precision
from mmalign_utils.config import get_profile
from mmalign_utils.train.vit import VITConfig


@pytest.fixture
def fresh_cpu_check(monkeypatch, tmp_path):
    monkeypatch.delenv(precision.ENV_VAR, raising=False)
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))  # no verdict from this machine's real cache
    monkeypatch.setattr(precision, "probe_bf16_speedup", lambda: 2.0)  # a CPU where bf16 is twice as fast
    precision.cpu_has_native_bf16.cache_clear()
    precision.measured_bf16_speedup.cache_clear()
    yield
    precision.cpu_has_native_bf16.cache_clear()
    precision.measured_bf16_speedup.cache_clear()


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    return path


def test_cpu_flags_reads_the_flags_line_and_none_without_the_file(tmp_path):
    assert precision.cpu_flags(_cpuinfo(tmp_path, "fpu sse2 avx2 fma")) == {"fpu", "sse2", "avx2", "fma"}
    assert precision.cpu_flags(tmp_path / "missing") is None


@pytest.mark.parametrize("flags, native", [
    ("sse2 avx2 fma", False),  # AVX2 only (the AMD EPYC of the ninth session): bf16 is emulated
    ("avx2 avx512f avx512bw avx512vl", False),  # AVX-512 without bf16 instructions
    ("avx2 avx512f avx512_bf16", True),  # Cooper Lake, Zen 4
    ("avx2 avx512f amx_bf16 amx_tile", True),  # Sapphire Rapids
])
def test_native_bf16_needs_bf16_instructions(monkeypatch, tmp_path, fresh_cpu_check, flags, native):
    read, path = precision.cpu_flags, _cpuinfo(tmp_path, flags)
    monkeypatch.setattr(precision, "cpu_flags", lambda: read(path))
    assert precision.cpu_has_native_bf16() is native
    assert precision.cpu_compute_dtype() == (torch.bfloat16 if native else torch.float32)


def test_the_environment_variable_overrides_and_rejects_unknown_names(monkeypatch, fresh_cpu_check):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2"})
    monkeypatch.setenv(precision.ENV_VAR, "bf16")
    assert precision.cpu_compute_dtype() == torch.bfloat16
    monkeypatch.setenv(precision.ENV_VAR, "FP32")
    assert precision.cpu_compute_dtype() == torch.float32
    monkeypatch.setenv(precision.ENV_VAR, "fp16")
    with pytest.raises(ValueError, match="MMALIGN_CPU_DTYPE='fp16'"):
        precision.cpu_compute_dtype()


@pytest.mark.parametrize("forced, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_toy_profile_and_vit_build_follow_the_cpu_dtype(monkeypatch, forced, dtype):
    monkeypatch.setenv(precision.ENV_VAR, forced)
    assert get_profile("toy").dtype == "auto" and get_profile("toy").torch_dtype == dtype
    assert get_profile("paper").torch_dtype == torch.bfloat16  # GPUs: unchanged
    assert VITConfig().uses_bf16() is (dtype == torch.bfloat16)
    assert VITConfig(bf16_frozen_lm=False).uses_bf16() is False  # an explicit choice wins
    assert VITConfig(bf16_frozen_lm=True).uses_bf16() is True


@pytest.mark.parametrize("speedup, dtype", [
    (2.3, torch.bfloat16),  # earlier sessions' bf16 machines: 190 vs 83 GFLOP/s
    (1.15, torch.bfloat16),  # exactly the threshold
    (1.10, torch.float32),  # a win inside the noise is not enough
    (0.58, torch.float32),  # the seventeenth session's Xeon: fp32 1.72x faster on the probe's shape
])
def test_native_bf16_is_used_only_where_it_measures_faster(monkeypatch, fresh_cpu_check, speedup, dtype):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    monkeypatch.setattr(precision, "probe_bf16_speedup", lambda: speedup)
    assert precision.cpu_compute_dtype() == dtype


def test_the_measured_verdict_is_kept_per_machine_and_reused(monkeypatch, fresh_cpu_check, tmp_path):
    calls = []
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setattr(precision, "probe_bf16_speedup", lambda: calls.append(1) or 0.5)
    assert precision.cpu_compute_dtype() == torch.float32
    precision.measured_bf16_speedup.cache_clear()  # as a new process on the same machine
    assert precision.cpu_compute_dtype() == torch.float32 and len(calls) == 1
    saved = json.loads((tmp_path / "cache" / "cpu_dtype.json").read_text())
    assert [v["bf16_speedup"] for v in saved.values()] == [0.5]
    # another machine (other flags) gets its own entry and its own measurement
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512_bf16", "amx_bf16"})
    precision.measured_bf16_speedup.cache_clear()
    assert precision.cpu_compute_dtype() == torch.float32 and len(calls) == 2


def test_the_probe_times_both_dtypes_and_returns_their_ratio():
    ratio = precision.probe_bf16_speedup(repeats=1)
    assert 0.01 < ratio < 100  # a real ratio of two positive times, whichever dtype this CPU favours

