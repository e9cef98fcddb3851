"""What a run reuses instead of redoing. A sweep run (`{root}/sweeps/<name=value,...>/`) reads the inputs it lacks
from the root it was started from: the toy LLaVA, notebook 02's datasets and the starting model's cached
evaluation; what it makes stays in its own folder (before, every run of `mmalign sweep 05 --grid beta ...` rebuilt
the toy LLaVA, hours, in its own folder and then stopped for want of notebook 02's datasets). A rerun of a finished
alignment notebook reads its aligned model's evaluation back while the weights are the same."""
import json
import pytest

from mmalign_utils import alignment_report as ar
from mmalign_utils.config import SWEEPS_FOLDER, RunContext
from mmalign_utils.results import ResultRow, read_results
from mmalign_utils.train import vit
from mmalign_utils.train.recipes import recipe_for_run


def _finished_build(folder, accuracy):
    (folder / "model").mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"vqa": {"accuracy_shapes": accuracy}}))


def _saved_dataset(folder):
    folder.mkdir(parents=True)
    (folder / "state.json").write_text("{}")


@pytest.fixture
def root(tmp_path):
    return tmp_path / "art"


@pytest.fixture
def sweep_ctx(root):
    return RunContext(smoke=True, artifacts_dir=root / SWEEPS_FOLDER / "beta=0.3,seed=1")


def test_input_dirs_are_the_run_folder_then_a_sweeps_root(root, sweep_ctx):
    plain = RunContext(smoke=True, artifacts_dir=root)
    assert plain.input_dirs == [root]
    assert plain.input_home("toy_llava") == root / "toy-smoke" / "toy_llava"
    assert sweep_ctx.input_dirs == [sweep_ctx.artifacts_dir, root]
    assert sweep_ctx.input_home("toy_llava") == root / "toy-smoke" / "toy_llava"
    # a folder that merely contains "sweeps" higher up is not a sweep run
    nested = RunContext(artifacts_dir=root / SWEEPS_FOLDER / "a=1" / "inner")
    assert nested.input_dirs == [nested.artifacts_dir]


def test_find_input_prefers_the_run_folder_and_makes_nothing(root, sweep_ctx):
    assert sweep_ctx.find_input("preference", "dpo") is None
    assert not (root / "toy-smoke").exists() and not (sweep_ctx.artifacts_dir / "toy-smoke").exists()
    _saved_dataset(root / "toy-smoke" / "preference" / "dpo")
    assert sweep_ctx.find_input("preference", "dpo") == root / "toy-smoke" / "preference" / "dpo"
    _saved_dataset(sweep_ctx.artifacts_dir / "toy-smoke" / "preference" / "dpo")
    assert sweep_ctx.find_input("preference", "dpo") == sweep_ctx.artifacts_dir / "toy-smoke" / "preference" / "dpo"
    # the variant is part of the lookup: a full-size run does not take the smoke datasets
    full = RunContext(artifacts_dir=sweep_ctx.artifacts_dir)
    assert full.find_input("preference", "dpo") is None


def test_a_sweep_run_reuses_the_roots_toy_llava_instead_of_building(root, sweep_ctx, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("the toy LLaVA was rebuilt")

    monkeypatch.setattr(vit, "build_toy_llava", no_build)
    _finished_build(root / "toy-smoke" / "toy_llava", 0.9)
    (root / "toy-smoke" / "toy_llava.partial").mkdir()  # another build's leftovers do not count
    path, report = vit.ensure_toy_llava(sweep_ctx)
    assert path == root / "toy-smoke" / "toy_llava" / "model"
    assert report["vqa"]["accuracy_shapes"] == 0.9
    recipe = recipe_for_run("dpo", sweep_ctx)
    assert recipe.model == str(path)
    assert recipe.output_dir == str(sweep_ctx.artifacts_dir / "toy-smoke" / "runs" / "dpo")  # outputs stay here
    # a build of the run's own comes first
    _finished_build(sweep_ctx.artifacts_dir / "toy-smoke" / "toy_llava", 0.5)
    path, report = vit.ensure_toy_llava(sweep_ctx)
    assert path == sweep_ctx.artifacts_dir / "toy-smoke" / "toy_llava" / "model"
    assert report["vqa"]["accuracy_shapes"] == 0.5


def test_a_sweep_run_without_any_build_builds_it_in_the_root(root, sweep_ctx, monkeypatch):
    built = []

    def fake_build(out, cfg, progress, longform_cache, text_cache):
        built.append((out, longform_cache))
        _finished_build(out, 0.8)
        return {"vqa": {"accuracy_shapes": 0.8}}

    monkeypatch.setattr(vit, "build_toy_llava", fake_build)
    path, _ = vit.ensure_toy_llava(sweep_ctx)
    assert path == root / "toy-smoke" / "toy_llava" / "model"
    assert built == [(root / "toy-smoke" / "toy_llava.partial", root / "toy-smoke" / "vit_longform.jsonl")]
    vit.ensure_toy_llava(RunContext(smoke=True, artifacts_dir=root / SWEEPS_FOLDER / "beta=0.5,seed=1"))
    assert len(built) == 1  # the sweep's next run reuses it


def test_a_sweep_run_trains_on_the_roots_datasets(root, sweep_ctx):
    with pytest.raises(ar.MissingDatasetError, match="run notebook 02 first"):
        ar.preference_dataset(sweep_ctx, "dpo")
    _saved_dataset(root / "toy-smoke" / "preference" / "dpo")
    # a folder without a saved dataset in the run's own folder (notebook 02 killed while writing) is passed over by
    # both lookups alike: the dataset the notebook checks is the one its recipe trains on
    (sweep_ctx.artifacts_dir / "toy-smoke" / "preference" / "dpo").mkdir(parents=True)
    assert ar.preference_dataset(sweep_ctx, "dpo") == root / "toy-smoke" / "preference" / "dpo"
    assert recipe_for_run("dpo", sweep_ctx).train_data == str(root / "toy-smoke" / "preference" / "dpo")
    (sweep_ctx.artifacts_dir / "toy-smoke" / "preference" / "dpo").rmdir()
    # a sweep that ran notebook 02 itself (e.g. over temperature) trains on its own datasets
    _saved_dataset(sweep_ctx.artifacts_dir / "toy-smoke" / "preference" / "dpo")
    assert ar.preference_dataset(sweep_ctx, "dpo") == sweep_ctx.artifacts_dir / "toy-smoke" / "preference" / "dpo"


def test_a_sweep_run_reuses_the_roots_evaluation_of_the_starting_model(root, monkeypatch):
    evaluated = []

    def fake_evaluate(ctx, model, processor, name, settings, progress=True):
        evaluated.append(ctx.artifacts_dir)
        return [ResultRow(ctx.notebook, name, "shapes-pope", "all", "f1_mean", 0.75, 300, seed=ctx.seed)]

    monkeypatch.setattr("mmalign_utils.models.load_mllm", lambda *args, **kwargs: (object(), object()))
    monkeypatch.setattr(ar, "evaluate_aligned", fake_evaluate)
    root_ctx = RunContext(smoke=True, artifacts_dir=root, notebook="03_sft")
    first = ar.starting_model_rows(root_ctx, "hub/model-id")
    assert evaluated == [root] and len(read_results(root_ctx.results_csv)) == 1
    run_ctx = RunContext(smoke=True, artifacts_dir=root / SWEEPS_FOLDER / "beta=0.3,seed=0", notebook="05_dpo")
    again = ar.starting_model_rows(run_ctx, "hub/model-id")
    assert evaluated == [root]  # not evaluated again
    assert [(r.benchmark, r.metric, r.value) for r in again] == [(r.benchmark, r.metric, r.value) for r in first]
    assert not run_ctx.results_csv.exists()  # its rows are the root's, counted once
    other_seed = RunContext(smoke=True, seed=1, artifacts_dir=root / SWEEPS_FOLDER / "beta=0.3,seed=1")
    ar.starting_model_rows(other_seed, "hub/model-id")
    assert evaluated == [root, other_seed.artifacts_dir]  # another seed is another evaluation


def test_a_rerun_reads_an_aligned_models_evaluation_back_while_its_weights_are_the_same(root, monkeypatch):
    from mmalign_utils import degradation
    from mmalign_utils.bench.shapes import runner

    answered = []

    def fake_answers(model, processor, prompts, **kwargs):
        answered.append(len(prompts))
        return ["A short answer about the topic." for _ in prompts]

    monkeypatch.setattr(degradation, "answer_text_suite", fake_answers)
    monkeypatch.setattr(runner, "evaluate", lambda *args, **kwargs: {})
    ctx = RunContext(smoke=True, artifacts_dir=root, notebook="05_dpo")
    merged = root / "merged"
    merged.mkdir(parents=True)
    (merged / "model.safetensors").write_bytes(b"weights one")
    first = ar.evaluate_aligned(ctx, None, None, "toy-llava-dpo", model_path=merged)
    assert answered == [8]  # smoke: 8 text prompts
    (merged / "model.safetensors").write_bytes(b"weights one")  # saved again, same content: a newer file time
    again = ar.evaluate_aligned(ctx, None, None, "toy-llava-dpo", model_path=merged)
    assert answered == [8]
    assert [(r.metric, r.value) for r in again] == [(r.metric, r.value) for r in first] and len(first) > 3
    ar.evaluate_aligned(RunContext(smoke=True, seed=1, artifacts_dir=root, notebook="05_dpo"), None, None,
                        "toy-llava-dpo", model_path=merged)
    assert answered == [8, 8]  # another seed
    (merged / "model.safetensors").write_bytes(b"weights two")
    ar.evaluate_aligned(ctx, None, None, "toy-llava-dpo", model_path=merged)
    assert answered == [8, 8, 8]  # retrained weights
    ar.evaluate_aligned(ctx, None, None, "toy-llava-dpo")
    assert answered == [8, 8, 8, 8]  # no model_path: nothing cached
