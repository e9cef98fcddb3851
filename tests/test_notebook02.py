"""Notebook 02 (self-sampling and annotation): its parameters cell and stripped outputs (fast), and a headless
smoke run through papermill on an untrained toy LLaVA (slow)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_annotation.ipynb"


def test_parameters_cell_first_and_outputs_stripped():
    nb = json.loads(NOTEBOOK.read_text())
    first = nb["cells"][0]
    assert first["cell_type"] == "code" and "parameters" in first["metadata"].get("tags", [])
    source = "".join(first["source"])
    for name in ("profile", "smoke", "seed", "artifacts_dir", "judge", "k", "temperature", "n_prompts"):
        assert f"\n{name} =" in f"\n{source}", name
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code")
    assert "GEMINI_API_KEY" not in source.replace("$GEMINI_API_KEY", "")  # the key is never a parameter


@pytest.mark.slow
def test_smoke_run_headless(tmp_path):
    import torch

    from mmalign_utils.models import build_toy_mllm, save_mllm

    model, processor = build_toy_mllm(dtype=torch.bfloat16)
    model_dir = save_mllm(model, processor, tmp_path / "toy_llava" / "model")
    del model
    out = tmp_path / "02_out.ipynb"
    artifacts = tmp_path / "artifacts"
    command = [sys.executable, "-m", "papermill", str(NOTEBOOK), str(out), "-k", "python3",
               "-p", "smoke", "True", "-p", "artifacts_dir", str(artifacts), "-p", "model_path", str(model_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    shared = artifacts / "toy-smoke"
    # temperature None samples at the toy profile's temperature (0.9, config.PROFILES), not the paper's 1.2
    samples = (shared / "samples" / "samples_k4_t0.9_m16.jsonl").read_text().splitlines()
    assert len(samples) == 6 and all(len(json.loads(line)["answers"]) == 4 for line in samples)
    for name in ("dpo", "rejection_sampling", "steerlm", "sft", "dpo_images_50", "dpo_flip_25"):
        card = (shared / "preference" / name / "README.md").read_text()
        assert "oracle:shapesworld-v2(miss=1,seed=0)" in card and "within-prompt quality spread" in card
    with open(artifacts / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["notebook"] == "02_annotation"]
    metrics = {r["metric"] for r in rows}
    assert {"quality_spread_mean", "share_prompts_with_pair", "chosen_quality_mean", "rejected_length_words_mean"} \
        <= metrics
    # judge None rates with the toy profile's annotator, the lenient oracle (config.PROFILES)
    assert all(r["judge"] == "oracle:shapesworld-v2(miss=1,seed=0)" and r["model"] == "toy_llava" for r in rows)
    executed = json.loads(out.read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
