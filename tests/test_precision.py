"""The CPU compute dtype: bf16 only where the processor has bf16 instructions, fp32 elsewhere."""
import pytest
import torch

from mmalign_utils import precision
from mmalign_utils.config import get_profile
from mmalign_utils.train.vit import VITConfig


@pytest.fixture
def fresh_cpu_check(monkeypatch):
    monkeypatch.delenv(precision.ENV_VAR, raising=False)
    precision.cpu_has_native_bf16.cache_clear()
    yield
    precision.cpu_has_native_bf16.cache_clear()


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
