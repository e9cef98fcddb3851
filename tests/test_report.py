"""Notebook 07's analysis (mmalign_utils.report) on hand-built artifacts: collection and de-duplication over
sweep folders, seed pooling and its CIs, Table 4 placement, the claims' verdicts, the length control and the
Figure 3 correlations, all against numbers worked out by hand; and the notebook executed headless (slow)."""
from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmalign_utils import report
from mmalign_utils.results import RESULT_COLUMNS

BASE, MLLM, DPO = "smollm2-135m-instruct", "toy-llava", "toy-llava-dpo"
TEXT = ("textsuite", "heldout", "prompt_strict_acc")


def row(model, benchmark, split, metric, value, ci=(math.nan, math.nan), seed=0, profile="toy", notebook="06",
        n=100):
    return {"notebook": notebook, "model": model, "benchmark": benchmark, "split": split, "metric": metric,
            "value": value, "n": n, "ci_low": ci[0], "ci_high": ci[1], "seed": seed, "profile": profile,
            "protocol": "p1", "judge": ""}


def write_results(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def text(model, value, ci=(math.nan, math.nan), seed=0, **kw):
    return row(model, *TEXT, value, ci, seed, **kw)


def build_artifacts(root: Path) -> Path:
    """A run with three seeds for the base LLM and the MLLM, one for the aligned models, two data-scaling sweep
    folders, a repeated row (a notebook run twice), a row copied into a sweep folder, and a paper-profile row."""
    main = [
        *(text(BASE, v, seed=s) for s, v in enumerate((0.40, 0.44, 0.48))),
        *(text(MLLM, v, seed=s) for s, v in enumerate((0.20, 0.22, 0.24))),
        text(DPO, 0.50, (0.41, 0.59)),
        text(DPO, 0.50, (0.41, 0.59)),  # the same notebook run twice: one row
        text("toy-llava-rs", 0.45, (0.36, 0.54)),
        text("toy-llava-steerlm", 0.35, (0.26, 0.44)),
        text("toy-llava-sft", 0.30, (0.21, 0.39)),
        row(BASE, "text-suite", "text", "prompt_strict_acc", 0.9, (0.8, 1.0), notebook="01"),  # not used: other measure
        row(MLLM, "shapes-mmvet", "all", "total", 30.0, (28.0, 32.0)),
        row(DPO, "shapes-mmvet", "all", "total", 40.0, (37.0, 43.0)),
        row(DPO, "shapes-llavabench", "all", "relative", 70.0, (60.0, 80.0)),  # the MLLM's is missing
        row(MLLM, "shapes-pope", "all", "f1_mean", 0.85, (0.83, 0.87)),
        row(DPO, "shapes-pope", "all", "f1_mean", 0.86, (0.84, 0.88)),
        row(MLLM, "shapes-mmbench", "all", "circular_acc", 0.60, (0.57, 0.63)),
        row(DPO, "shapes-mmbench", "all", "circular_acc", 0.50, (0.47, 0.53)),
        text(DPO, 0.10, (0.0, 0.2), profile="paper"),
    ]
    write_results(root / "results.csv", main)
    write_results(root / "sweeps" / "data=0.5,seed=0" / "results.csv",
                  [text(f"{DPO}@data=0.5", 0.42, (0.33, 0.51)), text(DPO, 0.50, (0.41, 0.59))])
    write_results(root / "sweeps" / "data=0.25,seed=0" / "results.csv",
                  [text(f"{DPO}@data=0.25", 0.30, (0.22, 0.38))])
    return root


# ------------------------------------------------------------------------------------------------ collection


def test_collect_recursive_with_source_and_deduplicated(tmp_path):
    raw = report.collect_results(build_artifacts(tmp_path))
    assert set(raw["source"]) == {"results.csv", "sweeps/data=0.5,seed=0/results.csv",
                                  "sweeps/data=0.25,seed=0/results.csv"}
    dpo_text = raw[(raw.model == DPO) & (raw.benchmark == "textsuite") & (raw.profile == "toy")]
    assert len(dpo_text) == 1 and dpo_text.iloc[0]["source"] == "results.csv"  # the run's own copy is kept
    assert len(raw) == 20 - 1 + 1 + 1  # 20 rows at the root less the repeat, one new row from each sweep folder
    assert raw["judge"].eq("").all() and raw["split"].map(type).eq(str).all()


def test_collect_empty_and_bad_files(tmp_path):
    assert report.collect_results(tmp_path).empty
    assert "source" in report.collect_results(tmp_path).columns
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "results.csv").write_text("model,value\nx,1\n")
    with pytest.raises(ValueError, match=r"sub/results.csv.*lacks the results columns"):
        report.collect_results(tmp_path)


# ------------------------------------------------------------------------------------------------ seeds


def test_aggregate_three_seeds_t_interval_by_hand(tmp_path):
    agg = report.aggregate_seeds(report.collect_results(build_artifacts(tmp_path)))
    base = agg[(agg.model == BASE) & (agg.benchmark == "textsuite")].iloc[0]
    # mean 0.44, sd 0.04; t(0.975, 2) = 4.302653; half width 4.302653 * 0.04 / sqrt(3) = 0.0993656
    assert base["value"] == pytest.approx(0.44)
    assert base["sd"] == pytest.approx(0.04)
    assert (base["ci_low"], base["ci_high"]) == pytest.approx((0.3406344, 0.5393656), abs=1e-6)
    assert (base["n_seeds"], base["seeds"], base["ci_kind"]) == (3, "0,1,2", "seeds")


def test_aggregate_one_seed_keeps_bootstrap_ci_and_repeats_count_once():
    one = report.aggregate_seeds(pd.DataFrame([text(DPO, 0.5, (0.41, 0.59))]))
    assert one.iloc[0][["value", "ci_low", "ci_high", "n_seeds", "ci_kind"]].tolist() == [0.5, 0.41, 0.59, 1,
                                                                                         "bootstrap"]
    # seed 0 run twice in one file (0.40, then a rerun on rebuilt data 0.50: the rerun counts), seed 1 once (0.55):
    # mean 0.525, sd = |0.55 - 0.50| / sqrt(2) = 0.0353553, t(0.975, 1) = 12.706205,
    # half width 12.706205 * 0.0353553 / sqrt(2) = 0.3176551
    two = report.aggregate_seeds(pd.DataFrame([text(DPO, 0.40), text(DPO, 0.50), text(DPO, 0.55, seed=1)]))
    assert two.iloc[0]["value"] == pytest.approx(0.525)
    assert (two.iloc[0]["ci_low"], two.iloc[0]["ci_high"]) == pytest.approx((0.2073449, 0.8426551), abs=1e-6)
    none = report.aggregate_seeds(pd.DataFrame([text(DPO, 0.5)]))
    assert none.iloc[0]["ci_kind"] == "none"


# ------------------------------------------------------------------------------------------------ Table 4


def test_table4_places_ours_beside_the_papers(tmp_path):
    table = report.table4(report.collect_results(build_artifacts(tmp_path)), "toy")
    assert list(table.index) == ["base LLM", "MLLM", "SFT", "SteerLM", "rejection sampling", "DPO"]
    assert table.loc["DPO", ("MM-Vet", "ours")] == 40.0 and table.loc["DPO", ("MM-Vet", "paper")] == 41.2
    assert table.loc["MLLM", ("MMBench", "ours")] == pytest.approx(60.0)  # 0.60 as the paper's %
    assert table.loc["MLLM", ("POPE", "ours")] == 0.85 and table.loc["MLLM", ("POPE", "paper")] == 0.859
    assert math.isnan(table.loc["MLLM", ("LLaVA-Bench", "ours")])
    # text-suite/text has only the base LLM here: the column takes textsuite/heldout, which has all six (x100)
    assert table.loc["base LLM", ("Text suite", "ours")] == pytest.approx(44.0)
    assert table.loc["DPO", ("Text suite", "ours")] == pytest.approx(50.0)  # not the paper-profile row
    assert table.attrs["ci"][("DPO", "MM-Vet")] == (37.0, 43.0)
    markdown = report.table4_markdown(table)
    assert "| DPO | `toy-llava-dpo` | 41.2 | 40.0 [37.0, 43.0] |" in markdown
    flat = report.table4_flat(table)
    assert flat.loc["DPO", "MM-Vet ours ci_low"] == 37.0 and flat.loc["DPO", "model"] == DPO


def test_table4_with_nothing_measured():
    table = report.table4(pd.DataFrame(columns=[*RESULT_COLUMNS]), "toy")
    ours = table.xs("ours", axis=1, level="source")
    assert ours.isna().all().all()
    assert table.loc["DPO", ("MT-Bench", "paper")] == 6.73


# ------------------------------------------------------------------------------------------------ claims


def test_claims_verdicts(tmp_path):
    claims = report.claims_check(report.collect_results(build_artifacts(tmp_path)), "toy").set_index("claim")
    verdicts = claims["verdict"].to_dict()
    # a: MLLM [0.170, 0.270] wholly below base [0.341, 0.539]
    assert verdicts["a"] == report.HOLDS
    # b: DPO 0.50 >= base 0.44
    assert verdicts["b"] == report.HOLDS
    # c: 0.50 > 0.45 > 0.35 > 0.30 in order, but neighbouring intervals overlap
    assert verdicts["c"] == report.INCONCLUSIVE
    assert "point estimates agree with the claim" in claims.loc["c", "note"]
    # d1: MM-Vet 30 [28, 32] -> 40 [37, 43]; d2: no MLLM LLaVA-Bench row
    assert verdicts["d1"] == report.HOLDS
    assert verdicts["d2"] == report.NOT_MEASURED and "toy-llava" in claims.loc["d2", "note"]
    # d3: POPE 85 -> 86 points, within 2; d4: MMBench 60 -> 50, differences [47-63, 53-57] = [-16, -4] all < -2
    assert verdicts["d3"] == report.HOLDS
    assert verdicts["d4"] == report.DOES_NOT_HOLD
    # e1: data 0.25 -> 0.30 [0.22, 0.38], data 1.0 -> 0.50 [0.41, 0.59]; e2: no flip rows
    assert verdicts["e1"] == report.HOLDS
    assert "data 0.5: 42 [33, 51]" in claims.loc["e1", "ours"]  # the text suite shown in %
    assert verdicts["e2"] == report.NOT_MEASURED
    assert "5.99" in claims.loc["a", "paper"] and "6.57" in claims.loc["a", "paper"]


def test_claims_not_measured_and_no_mixed_measures():
    only_nb01 = pd.DataFrame([row(BASE, "text-suite", "text", "prompt_strict_acc", 0.5, (0.4, 0.6), notebook="01"),
                              row(MLLM, "text-suite", "text", "prompt_strict_acc", 0.45, (0.35, 0.55), notebook="01"),
                              text(DPO, 0.9, (0.8, 1.0))])
    claims = report.claims_check(only_nb01).set_index("claim")
    assert claims.loc["a", "verdict"] == report.INCONCLUSIVE  # lower, intervals overlap
    assert "point estimates agree" in claims.loc["a", "note"]
    assert claims.loc["a", "measure"] == "Text suite strict %"  # text-suite/text, the first text measure
    # DPO is on the runner's measure, the base LLM only on notebook 01's: not compared across measures
    assert claims.loc["b", "verdict"] == report.NOT_MEASURED
    empty = report.claims_check(pd.DataFrame(columns=[*RESULT_COLUMNS]))  # no rows, no profile: all not measured
    assert (empty["verdict"] == report.NOT_MEASURED).all() and len(empty) == 9


def test_verdict_rules():
    e = report.Estimate
    assert report._better(e(2, 1.5, 2.5, 1, ""), e(1, 0.5, 1.4, 1, "")) == report.HOLDS
    assert report._better(e(2, 1.5, 2.5, 1, ""), e(1, 0.5, 1.6, 1, "")) == report.INCONCLUSIVE
    assert report._better(e(2, math.nan, math.nan, 1, ""), e(1, 0.5, 1.4, 1, "")) == report.INCONCLUSIVE
    assert report._better(e(1, 0, 2, 1, ""), e(1, 0, 2, 1, "")) == report.INCONCLUSIVE  # equal, uncertain
    assert report._better(e(0, 0, 0, 1, ""), e(0, 0, 0, 1, "")) == report.DOES_NOT_HOLD  # equal, certain
    assert report._better(e(1, 0.5, 1.4, 1, ""), e(2, 1.5, 2.5, 1, "")) == report.DOES_NOT_HOLD
    assert report._better(e(1, 0.5, 1.6, 1, ""), e(2, 1.5, 2.5, 1, "")) == report.INCONCLUSIVE
    assert report._combine([report.HOLDS, report.INCONCLUSIVE]) == report.INCONCLUSIVE
    assert report._combine([report.HOLDS, report.DOES_NOT_HOLD, report.INCONCLUSIVE]) == report.DOES_NOT_HOLD
    assert report._not_worse(e(0.9, 0.8, 1.0, 1, ""), e(1.0, 0.95, 1.05, 1, "")) == report.INCONCLUSIVE
    assert report._not_worse(e(0.5, 0.4, 0.6, 1, ""), e(1.0, 0.95, 1.05, 1, "")) == report.DOES_NOT_HOLD
    assert report._within(e(53, 50, 56, 1, ""), e(50, 48, 52, 1, ""), 2) == report.INCONCLUSIVE  # [-2, 8]
    assert report._within(e(51.5, 50, 53, 1, ""), e(50, 48, 52, 1, ""), 2) == report.HOLDS


# ------------------------------------------------------------------------------------------------ ablations


def test_ablation_table_reads_model_suffixes(tmp_path):
    table = report.ablation_table(report.collect_results(build_artifacts(tmp_path)), "toy", "data")
    assert table["data"].tolist() == [0.25, 0.5, 1.0]
    assert table["value"].tolist() == pytest.approx([30.0, 42.0, 50.0])
    assert table["model"].tolist() == [f"{DPO}@data=0.25", f"{DPO}@data=0.5", DPO]
    assert report.ablation_table(report.collect_results(tmp_path), "toy", "flip")["flip"].tolist() == [0.0]
    assert report.parse_ablation("toy-llava-dpo@beta=0.1") == ("toy-llava-dpo", "beta", 0.1)
    assert report.parse_ablation("toy-llava-dpo") is None


# ------------------------------------------------------------------------------------------------ lengths


def per_prompt_rows():
    # model A: p1 10 words fail, p2 30 words pass; model B (two seeds, identical): p1 10 fail, p2 130 pass.
    rows = [("A", 0, "p1", 0, 10), ("A", 0, "p2", 0, 30)]
    rows += [("B", s, "p1", 0, 10) for s in (0, 1)] + [("B", s, "p2", 1, 130) for s in (0, 1)]
    return pd.DataFrame(rows, columns=["model", "seed", "id", "strict", "n_words"])


def test_length_controlled_score_by_hand():
    # Interaction contrasts over the 2 x 2 panel: words 10 - 30 - 10 + 130 = 100, score 0 - 0 - 0 + 1 = 1, so the
    # common slope is 1/100 per word. B at A's mean length (20 words): 0.5 - 0.01 * (70 - 20) = 0.0.
    lc = report.length_controlled_scores(per_prompt_rows(), "A", n_boot=50).set_index("model")
    assert lc.loc["B", "raw"] == 0.5 and lc.loc["B", "mean_words"] == 70
    assert lc.loc["B", "slope_per_100_words"] == pytest.approx(1.0)
    assert lc.loc["A", "lc_score"] == pytest.approx(0.0, abs=1e-9)
    assert lc.loc["B", "lc_score"] == pytest.approx(0.0, abs=1e-9)
    assert lc.loc["A", "reference_words"] == 20
    with pytest.raises(ValueError, match="reference model 'C'"):
        report.length_controlled_scores(per_prompt_rows(), "C")


def test_length_summary_and_bins():
    summary = report.length_summary(per_prompt_rows(), n_boot=50).set_index("model")
    assert summary.loc["B", "mean_words"] == 70 and summary.loc["B", "n_seeds"] == 2
    assert summary.loc["A", "strict"] == 0.0 and summary.loc["B", "n_prompts"] == 2
    assert report.length_summary(per_prompt_rows(), n_boot=10, order=["B", "C"])["model"].tolist() == ["B", "A"]
    bins = report.length_bins_table(per_prompt_rows(), n_bins=2)
    assert bins[("B", "answers")].sum() == 2 and bins[("A", "answers")].sum() == 2


def test_per_prompt_files_found_and_notebook01_mapped(tmp_path):
    table = per_prompt_rows().query("model == 'A'").drop(columns=["model", "seed"])
    report.save_text_per_prompt(table, tmp_path / "sweeps" / "seed=1", DPO, 1, "toy")
    nb01 = tmp_path / "01_degradation" / "per_prompt.csv"
    nb01.parent.mkdir()
    pd.DataFrame({"condition": ["base LLM", "MLLM", "MLLM + irrelevant image"], "id": ["p1"] * 3,
                  "strict": [1, 0, 0], "n_words": [50, 20, 5]}).to_csv(nb01, index=False)
    write_results(tmp_path / "results.csv", [row(BASE, "text-suite", "text", "prompt_strict_acc", 1.0, seed=3,
                                                 notebook="01_degradation_analysis")])
    loaded = report.load_text_per_prompt(tmp_path, "toy")
    assert set(loaded["model"]) == {DPO, BASE, MLLM}
    assert loaded.loc[loaded.model == BASE, "seed"].tolist() == [3]  # from notebook 01's rows beside it
    assert loaded.loc[loaded.model == DPO, "seed"].tolist() == [1, 1]
    assert report.load_text_per_prompt(tmp_path, "paper").empty


def test_notebook01_names_read_from_its_results(tmp_path):
    # Paper profile, 7B pair: the MLLM is the model with a noisy-image row, whatever the profile's defaults say.
    nb01 = tmp_path / "01_degradation" / "per_prompt.csv"
    nb01.parent.mkdir()
    pd.DataFrame({"condition": ["base LLM", "MLLM"], "id": ["p1"] * 2, "strict": [1, 0],
                  "n_words": [50, 20]}).to_csv(nb01, index=False)
    write_results(tmp_path / "results.csv", [
        row("vicuna-7b-v1.5", "text-suite", "text", "mean_words", 50, seed=2, profile="paper", notebook="01_x"),
        row("llava-1.5-7b-hf", "text-suite", "text", "mean_words", 20, seed=2, profile="paper", notebook="01_x"),
        row("llava-1.5-7b-hf", "text-suite", "noisy-image", "mean_words", 9, seed=2, profile="paper",
            notebook="01_x")])
    loaded = report.load_text_per_prompt(tmp_path, "paper").set_index("model")
    assert loaded.loc["vicuna-7b-v1.5", "n_words"] == 50 and loaded.loc["llava-1.5-7b-hf", "n_words"] == 20
    assert set(loaded["seed"]) == {2}


# ------------------------------------------------------------------------------------------------ Figure 3


def build_annotation_store(root: Path, with_samples: bool = True, layout: str = "per-samples") -> Path:
    """Notebook 02's store; layout "per-samples" ({variant}/annotation/<samples name>/<judge>, with a second
    samples file of the same prompts beside it that must not be read) or "old" ({variant}/annotation/<judge>)."""
    from mmalign_utils.annotate.store import AnnotationStore

    annotation = root / "toy" / "annotation"
    store_dir = annotation / "samples_k3" / "oracle_shapesworld-v1" if layout == "per-samples" else \
        annotation / "oracle_shapesworld-v1"
    store = AnnotationStore(store_dir)
    scores = [dict(helpfulness=4, correctness=4, coherence=4, complexity=2, verbosity=1),
              dict(helpfulness=2, correctness=3, coherence=4, complexity=1, verbosity=3),
              dict(helpfulness=0, correctness=1, coherence=2, complexity=0, verbosity=2)]
    store.save_annotation("q1", "oracle:shapesworld-v1", scores, "why", "{}", 1)
    store.close()
    if with_samples:
        samples = root / "toy" / "samples" / "samples_k3.jsonl"
        samples.parent.mkdir(parents=True)
        samples.write_text(json.dumps({"prompt_id": "q1", "answers": ["a b c d e", "a b c", "a"]}) + "\n")
        if layout == "per-samples":  # other answers to the same prompt (other settings), sorted first
            samples.with_name("samples_k0_other.jsonl").write_text(
                json.dumps({"prompt_id": "q1", "answers": ["a", "a b c", "a b c d e"]}) + "\n")
    return store_dir


def test_annotation_pair_correlations_by_hand(tmp_path):
    store_dir = build_annotation_store(tmp_path)
    assert report.find_annotation_stores(tmp_path) == [store_dir]
    corr = report.annotation_pair_correlations(store_dir)
    # differences (0-1, 0-2, 1-2): helpfulness 2, 4, 2; correctness 1, 3, 2; complexity 1, 2, 1; words 2, 4, 2
    assert corr.loc["helpfulness", "correctness"] == pytest.approx(math.sqrt(3) / 2)
    assert corr.loc["helpfulness", "complexity"] == pytest.approx(1.0)
    assert corr.loc["helpfulness", "length"] == pytest.approx(1.0)
    assert corr.attrs["n_pairs"] == 3
    paper = report.paper_figure3()
    assert paper.loc["correctness", "helpfulness"] == 0.93 and paper.loc["verbosity", "complexity"] == 0.69
    assert np.allclose(paper.to_numpy(), paper.to_numpy().T)


def test_annotation_store_of_the_older_layout_finds_its_samples(tmp_path):
    corr = report.annotation_pair_correlations(build_annotation_store(tmp_path, layout="old"))
    assert corr.loc["helpfulness", "length"] == pytest.approx(1.0)


def test_annotation_without_samples_has_no_length(tmp_path):
    corr = report.annotation_pair_correlations(build_annotation_store(tmp_path, with_samples=False))
    assert "length" not in corr.columns


# ------------------------------------------------------------------------------------------------ plots


def test_plots_degrade_gracefully(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw = report.collect_results(build_artifacts(tmp_path))
    fig = report.plot_benchmark_bars(raw, "toy")
    titles = [ax.get_title() for ax in fig.axes if ax.patches]  # a panel per measured benchmark, no empty ones
    assert titles == [m.label for m in report.HEADLINE_MEASURES[:4]] + [m.label for m in report.TEXT_MEASURES]
    assert report.plot_benchmark_bars(raw.iloc[0:0], "toy") is None
    for knob in ("data", "flip"):
        assert report.plot_ablation(raw, "toy", knob) is not None
    assert report.plot_lengths(report.length_summary(per_prompt_rows().iloc[0:0])) is not None
    assert report.plot_attribute_heatmaps(None) is not None
    plt.close("all")


def test_markdown_and_saving(tmp_path):
    claims = report.claims_check(pd.DataFrame(columns=[*RESULT_COLUMNS]), "toy")
    csv_path, md_path = report.save_report_table(claims, tmp_path, "claims")
    assert pd.read_csv(csv_path)["verdict"].eq("not measured").all()
    assert md_path.read_text().startswith("| claim | statement |")


# ------------------------------------------------------------------------------------------------ notebook


@pytest.mark.slow
def test_notebook07_headless(tmp_path):
    from mmalign_utils.cli import main

    artifacts = build_artifacts(tmp_path / "artifacts")
    build_annotation_store(artifacts)
    report.save_text_per_prompt(per_prompt_rows().query("model == 'A'"), artifacts, BASE, 0, "toy")
    report.save_text_per_prompt(per_prompt_rows().query("model == 'B' and seed == 0"), artifacts, DPO, 0, "toy")
    assert main(["run", "07", "--smoke", "--artifacts-dir", str(artifacts)]) == 0
    executed = json.loads((artifacts / "notebooks" / "07_benchmarks_and_plots.ipynb").read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert "| DPO | `toy-llava-dpo` | 41.2 | 40.0 [37.0, 43.0] |" in (artifacts / "table4.md").read_text()
    claims = pd.read_csv(artifacts / "claims.csv").set_index("claim")
    assert claims.loc["d4", "verdict"] == "does not hold" and claims.loc["e2", "verdict"] == "not measured"
    for name in ("07_benchmarks", "07_data_scaling", "07_label_noise", "07_lengths", "07_attribute_correlations"):
        assert (artifacts / "figures" / f"{name}.png").stat().st_size > 5_000, name
    assert (artifacts / "lengths.md").exists()


def test_same_seed_in_two_sweep_folders_is_flagged(tmp_path):
    write_results(tmp_path / "sweeps" / "n_prompts=100,seed=0" / "results.csv", [text(DPO, 0.4)])
    write_results(tmp_path / "sweeps" / "n_prompts=600,seed=0" / "results.csv", [text(DPO, 0.6)])
    with pytest.warns(UserWarning, match="same seed in different files"):
        agg = report.aggregate_seeds(report.collect_results(tmp_path))
    assert agg.iloc[0]["value"] == pytest.approx(0.5) and agg.iloc[0]["n_seeds"] == 1


def test_notebook_parameters_cell_first_and_outputs_stripped():
    notebook = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "07_benchmarks_and_plots.ipynb")
                          .read_text())
    first = notebook["cells"][0]
    assert first["cell_type"] == "code" and "parameters" in first["metadata"].get("tags", [])
    source = "\n" + "".join(first["source"])
    for name in ("profile", "smoke", "seed", "artifacts_dir", "models", "length_reference"):
        assert f"\n{name} =" in source, name
    assert all(not c.get("outputs") and not c.get("execution_count") for c in notebook["cells"]
               if c["cell_type"] == "code")


def test_every_part_reports_nothing_on_an_empty_run(tmp_path):
    empty = pd.DataFrame(columns=[*RESULT_COLUMNS])
    assert report.aggregate_seeds(empty).empty and report.benchmark_bars_table(empty, "toy").empty
    assert report.ablation_table(empty, "toy", "data").empty
    assert report.load_text_per_prompt(tmp_path, "toy").empty and report.find_annotation_stores(tmp_path) == []
    assert report.length_controlled_scores(report.load_text_per_prompt(tmp_path, "toy"), BASE).empty
    assert report.length_bins_table(report.load_text_per_prompt(tmp_path, "toy")).empty


def test_notebook_code_on_an_empty_run(tmp_path):
    """The notebook's code cells, executed in this process (no kernel) on a run that measured nothing: every
    section says "not measured" instead of failing, and the tables are still written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    notebook = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "07_benchmarks_and_plots.ipynb")
                          .read_text())
    namespace: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec("".join(cell["source"]), namespace)
            if "parameters" in cell["metadata"].get("tags", []):
                namespace.update(smoke=True, artifacts_dir=str(tmp_path))
    plt.close("all")
    claims = pd.read_csv(tmp_path / "claims.csv")
    assert claims["verdict"].eq("not measured").all()
    assert (tmp_path / "table4.md").exists() and (tmp_path / "figures" / "07_label_noise.png").exists()


def test_nan_value_is_kept_but_supports_no_verdict_and_empty_value_is_an_error(tmp_path):
    write_results(tmp_path / "results.csv", [row(MLLM, "shapes-pope", "all", "f1_mean", math.nan),
                                             row(DPO, "shapes-pope", "all", "f1_mean", 0.8, (0.7, 0.9))])
    raw = report.collect_results(tmp_path)
    assert len(raw) == 2 and raw["value"].isna().sum() == 1  # F1 undefined: a measurement, not a broken row
    claims = report.claims_check(raw, "toy").set_index("claim")
    assert claims.loc["d3", "verdict"] == report.NOT_MEASURED
    (tmp_path / "results.csv").write_text((tmp_path / "results.csv").read_text().replace(",nan,", ",,", 1))
    with pytest.raises(ValueError, match=r"row 2 has no numeric value \(toy-llava, shapes-pope, f1_mean\)"):
        report.collect_results(tmp_path)


def test_pick_annotation_store_shows_the_store_the_training_sets_came_from(tmp_path):
    from mmalign_utils.report import pick_annotation_store

    samples = tmp_path / "toy" / "annotation" / "samples_k4_t0.9_m160"
    exact, lenient = samples / "oracle_shapesworld-v1", samples / "oracle_shapesworld-v1(miss=1,seed=0)"
    elsewhere = tmp_path / "toy-smoke" / "annotation" / "samples_k4_t0.9_m16" / "oracle_shapesworld-v1(miss=1,seed=0)"
    stores = [exact, lenient, elsewhere]
    raw = pd.DataFrame({"notebook": ["02_annotation", "05_dpo", "02_annotation"],
                        "judge": ["oracle:shapesworld-v1", "", "oracle:shapesworld-v1(miss=1,seed=0)"]})
    assert pick_annotation_store(stores, tmp_path, "toy", raw) == lenient  # the last notebook 02 run's judge
    assert pick_annotation_store(stores, tmp_path, "toy", raw.iloc[:2]) == exact
    assert pick_annotation_store(stores, tmp_path, "toy", None) == exact  # no results: the first
    assert pick_annotation_store(stores, tmp_path, "toy-smoke", raw) == elsewhere
    assert pick_annotation_store(stores, tmp_path, "paper", None) == exact  # none in the variant: any
    assert pick_annotation_store([], tmp_path, "toy", raw) is None


def _published_artifacts(root: Path) -> Path:
    """A finished series' artifacts as notebook 07 leaves them: results.csv, the two tables, one figure."""
    (root / "figures").mkdir(parents=True)
    rows = [dict.fromkeys(RESULT_COLUMNS, "") | {"model": "m", "value": 0.5}] * 3
    pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(root / "results.csv", index=False)
    (root / "table4.md").write_text("| model | MT-Bench |\n|---|---|\n| DPO | 6.73 |\n")
    (root / "claims.md").write_text("| claim | verdict |\n|---|---|\n| (a) | holds |\n")
    (root / "figures" / "07_benchmarks.png").write_bytes(b"\x89PNG fake")
    return root


def test_publish_results_copies_tables_and_figures(tmp_path):
    root = _published_artifacts(tmp_path / "art")
    page = report.publish_results(root, tmp_path / "out", commit="abc1234")
    text = page.read_text()
    assert "| DPO | 6.73 |" in text and "| (a) | holds |" in text
    assert "3 rows" in text and "commit abc1234" in text
    # the SHA-256 of results.csv, computed here with hashlib, not with our helper
    assert hashlib.sha256((root / "results.csv").read_bytes()).hexdigest()[:16] in text
    assert (tmp_path / "out" / "figures" / "07_benchmarks.png").read_bytes() == b"\x89PNG fake"
    assert "](figures/07_benchmarks.png)" in text
    # a figure the run did not make is named as missing, not linked
    assert "](figures/07_lengths.png)" not in text and "no `figures/07_lengths.png`" in text


def test_publish_results_names_the_command_when_tables_are_missing(tmp_path):
    root = _published_artifacts(tmp_path / "art")
    (root / "claims.md").unlink()
    with pytest.raises(FileNotFoundError, match="claims.md.*mmalign run 07"):
        report.publish_results(root, tmp_path / "out")
    from mmalign_utils.cli import main
    assert main(["publish", "--artifacts-dir", str(root), "--out", str(tmp_path / "out")]) == 1
    (root / "claims.md").write_text("| claim |\n|---|\n| (b) |\n")
    assert main(["publish", "--artifacts-dir", str(root), "--out", str(tmp_path / "out")]) == 0
    assert "| (b) |" in (tmp_path / "out" / "RESULTS.md").read_text()
