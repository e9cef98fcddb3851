"""Notebook 01 executed headless in smoke mode, as `mmalign run 01 --smoke` would: it must build the smoke toy
LLaVA, answer the text suite in three conditions, write its figure and append its rows to results.csv."""
import pytest

from mmalign_utils.cli import main
from mmalign_utils.results import read_results


@pytest.mark.slow
def test_notebook01_smoke_run(tmp_path, capsys):
    assert main(["run", "01", "--smoke", "--seed", "0", "--artifacts-dir", str(tmp_path)]) == 0
    assert (tmp_path / "notebooks" / "01_degradation_analysis.ipynb").exists()
    assert (tmp_path / "figures" / "01_degradation.png").stat().st_size > 10_000
    assert (tmp_path / "toy-smoke" / "toy_llava" / "report.json").exists()
    results = read_results(tmp_path / "results.csv")
    text = results[results.benchmark == "text-suite"]
    assert set(text.model) == {"smollm2-135m-instruct", "toy-llava"}
    assert set(text.split) == {"text", "noisy-image"}
    assert {"prompt_strict_acc", "mean_words", "scene_talk_share"} <= set(text.metric)
    assert (text.n == 8).all()
    assert (results.benchmark == "shapes-vqa").any()
    # A second run reuses the toy LLaVA instead of training it again.
    assert main(["run", "01", "--smoke", "--artifacts-dir", str(tmp_path)]) == 0
    executed = (tmp_path / "notebooks" / "01_degradation_analysis.ipynb").read_text()
    assert "reusing the toy LLaVA" in executed
    # The finished build keeps its reading curve and drops the checkpoints it resumed from.
    import json

    build = tmp_path / "toy-smoke" / "toy_llava"
    report = json.loads((build / "report.json").read_text())
    assert [r["step"] for r in report["stage2_reading_curve"]] == [3, 6]
    # the text-only share (the toy's ShareGPT) took part: imageless conversations with the LLM's own answers
    assert report["mix"]["n_text_only"] > 0 and report["text_only"]["n_used"] >= 1
    assert (tmp_path / "toy-smoke" / "vit_text_answers.jsonl").exists()
    assert not list(build.glob("ckpt_*")) and not (tmp_path / "toy-smoke" / "toy_llava.partial").exists()
    capsys.readouterr()
    assert main(["build-toy", "--smoke", "--artifacts-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "reusing the toy LLaVA" in out and f"held-out ShapesWorld VQA {report['vqa']['accuracy_shapes']:.3f}" in out


def test_a_half_finished_build_refuses_another_configuration(tmp_path):
    from mmalign_utils.train.vit import VITConfig, _check_same_config
    from dataclasses import asdict

    path = tmp_path / "build_config.json"
    _check_same_config(path, asdict(VITConfig.smoke()))
    _check_same_config(path, asdict(VITConfig.smoke()))  # the same configuration resumes
    changed = VITConfig.smoke()
    changed.stage2_steps = 7
    with pytest.raises(RuntimeError, match=r"changed: \['stage2_steps'\]\); delete that folder"):
        _check_same_config(path, asdict(changed))
    # the compute dtype follows the machine's CPU: a build started with bf16 may go on in fp32
    other_cpu = VITConfig.smoke()
    other_cpu.bf16_frozen_lm = False
    _check_same_config(path, asdict(other_cpu))
