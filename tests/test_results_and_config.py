import contextlib
import csv
import io
import math

import numpy as np
import pytest

from mmalign_utils.cli import parse_value, resolve_notebook
from mmalign_utils.config import RunContext, get_profile
from mmalign_utils.results import RESULT_COLUMNS, ResultRow, append_results, bootstrap_ci, read_results


def test_append_results_writes_header_once_and_keeps_columns(tmp_path):
    path = tmp_path / "results.csv"
    append_results(path, [ResultRow("01", "m", "b", "s", "acc", 0.5, 10)])
    append_results(path, [{"notebook": "02", "model": "m2", "benchmark": "b", "metric": "acc", "value": 1.0}])
    rows = list(csv.reader(open(path)))
    assert rows[0] == list(RESULT_COLUMNS)
    assert len(rows) == 3 and rows[2][0] == "02"
    df = read_results(path)
    assert list(df.value) == [0.5, 1.0]


def test_append_results_rejects_unknown_or_missing_columns(tmp_path):
    with pytest.raises(ValueError, match="unknown result columns"):
        append_results(tmp_path / "r.csv", [{"notebook": "x", "model": "m", "benchmark": "b", "metric": "m",
                                             "value": 1, "colour": "red"}])
    with pytest.raises(ValueError, match="lacks"):
        append_results(tmp_path / "r.csv", [{"notebook": "x", "value": 1}])


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    x = np.r_[np.zeros(50), np.ones(50)]
    mean, lo, hi = bootstrap_ci(x, seed=1)
    assert mean == 0.5 and lo < 0.5 < hi
    # The normal approximation of the 95% interval is 0.5 +- 1.96 * 0.05 = [0.402, 0.598].
    assert abs(lo - 0.402) < 0.03 and abs(hi - 0.598) < 0.03
    assert bootstrap_ci(x, seed=1) == (mean, lo, hi)
    assert all(math.isnan(v) for v in bootstrap_ci([]))


def test_run_context_paths_and_profiles(tmp_path):
    ctx = RunContext(profile="toy", smoke=True, seed=3, artifacts_dir=tmp_path)
    assert ctx.variant == "toy-smoke"
    assert ctx.shared_path("toy_llava") == tmp_path / "toy-smoke" / "toy_llava"
    assert ctx.results_csv == tmp_path / "results.csv"
    assert get_profile("paper").mllm == "llava-hf/llava-1.5-13b-hf"
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("huge")


def test_cli_parses_papermill_values_and_finds_notebooks():
    assert parse_value("true") is True and parse_value("False") is False
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("none") is None
    assert parse_value("toy") == "toy"
    assert resolve_notebook("01").name == "01_degradation_analysis.ipynb"
    with pytest.raises(SystemExit, match="no notebook"):
        resolve_notebook("99")


def test_sweep_grid_combinations_and_folders():
    from mmalign_utils.cli import sweep_folder, sweep_runs

    runs = sweep_runs([["beta", "0.1", "0.5"], ["seed", "0", "1", "2"], ["smoke", "true"]])
    assert len(runs) == 6
    assert runs[0] == {"beta": 0.1, "seed": 0, "smoke": True}
    assert sweep_folder(runs[-1]) == "beta=0.5,seed=2,smoke=True"
    assert sweep_runs([]) == [{}]


def test_headless_run_streams_cell_output_and_progress_to_the_log(tmp_path, monkeypatch, capfd):
    import nbformat

    from mmalign_utils.cli import run_notebook

    monkeypatch.setenv("MMALIGN_PLAIN_PROGRESS", "1")  # restored after the test; run_notebook sets it too
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell('artifacts_dir = "x"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "from mmalign_utils.progress import progress_bar\n"
        "print('hello from the kernel')\n"
        "for _ in progress_bar(range(3), desc='a long stage'):\n    pass")]
    path = tmp_path / "00_demo.ipynb"
    nbformat.write(nb, path)
    # A first run while stdout is another stream (as an earlier test in the same process has it): the log must
    # follow stdout, not stay bound to the stream of the first run.
    earlier = io.StringIO()
    with contextlib.redirect_stdout(earlier):
        run_notebook(path, {}, tmp_path / "first")
    assert "hello from the kernel" in earlier.getvalue()
    executed = run_notebook(path, {}, tmp_path / "artifacts")
    out = capfd.readouterr().out
    assert "hello from the kernel" in out and "a long stage" in out
    assert executed.exists()


def test_headless_run_resolves_relative_path_parameters_from_the_callers_directory(tmp_path, monkeypatch):
    """`mmalign run 02 -p model_path artifacts/...` from the repo root must find artifacts/..., not look for it
    beside the notebook (where it reached the hub as a repo id)."""
    import nbformat

    from mmalign_utils.cli import run_notebook

    (tmp_path / "caller" / "data").mkdir(parents=True)
    (tmp_path / "caller" / "data" / "marker.txt").write_text("found")
    (tmp_path / "nbdir").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('artifacts_dir = "x"\nmarker = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("assert open(marker).read() == 'found'")]
    path = tmp_path / "nbdir" / "00_paths.ipynb"
    nbformat.write(nb, path)
    monkeypatch.chdir(tmp_path / "caller")
    run_notebook(path, {"marker": "data/marker.txt"}, tmp_path / "artifacts")  # raises if the kernel missed it


def test_cli_refuses_artifacts_dir_as_a_notebook_parameter(tmp_path, monkeypatch):
    """--artifacts-dir sets the notebooks' artifacts_dir; a -p artifacts_dir used to be overridden silently, so
    the run wrote into ./artifacts. It must fail before anything runs, naming the option to use."""
    from mmalign_utils.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="--artifacts-dir elsewhere"):
        main(["run", "01", "-p", "artifacts_dir", "elsewhere"])
    assert not (tmp_path / "artifacts").exists()


def test_importing_the_package_caps_the_onednn_kernel_cache_unless_the_user_set_it():
    # The cap keeps CPU training memory bounded (mmalign_utils/__init__.py); a user's own value must win.
    import os
    import subprocess
    import sys

    code = "import os, mmalign_utils; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "64"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "512"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "512"
