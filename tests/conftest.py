"""Shared fixtures. Models are built once per test session: SmolLM2 loads from the converted cache (the
first run ever converts the GGUF, about 25 s), the untrained toy LLaVA builds in seconds."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2():
    from mmalign_utils.models import load_smollm2

    return load_smollm2(dtype=torch.float32)


@pytest.fixture(scope="session")
def untrained_llava():
    """The toy LLaVA right after building: SmolLM2's language model, random tower and projector."""
    from mmalign_utils.models import build_toy_mllm

    model, processor = build_toy_mllm()
    model.eval()
    return model, processor
