"""Notebook 02's per-family pair signal (mmalign_utils.annotation_report.pair_signal_by_group) and its
results.csv rows. Expected values are worked out by hand in the comments."""
from __future__ import annotations

import math

import pytest
from PIL import Image

from mmalign_utils.annotation_report import (answers_frame, funnel_table, pair_signal_by_group, result_rows,
                                             samples_file_name, spread_summary)
from mmalign_utils.preference import AnnotatedPrompt, build_dpo_pairs, pair_signal_report


def s(h: int, c: int, k: int) -> dict:
    return {"helpfulness": h, "correctness": c, "coherence": k, "complexity": 2, "verbosity": 2}


def prompt(pid: str, scores: list[dict], answers: list[str]) -> AnnotatedPrompt:
    return AnnotatedPrompt(prompt_id=pid, image=Image.new("RGB", (8, 8), (len(pid) * 20, 5, 5)), image_id=f"i-{pid}",
                           question=f"question {pid}?", answers=answers, scores=scores)


def _prompts() -> list[AnnotatedPrompt]:
    return [
        # D (describe): qualities [12, 6], words [5, 1]: chosen the longer -> centred quality +3/-3, words +2/-2
        prompt("D", [s(4, 4, 4), s(2, 2, 2)], ["a b c d e", "a"]),
        # S (short): qualities [3, 12], words [6, 2]: chosen the shorter -> centred quality -4.5/+4.5, words +2/-2
        prompt("S", [s(1, 1, 1), s(4, 4, 4)], ["a b c d e f", "a b"]),
        # T (short): qualities [8, 7], words [3, 1]: spread 1 -> no pair; centred quality +.5/-.5, words +1/-1
        prompt("T", [s(3, 3, 2), s(3, 2, 2)], ["a b c", "a"]),
    ]


def test_pair_signal_by_group_hand_computed():
    prompts = _prompts()
    dpo = build_dpo_pairs(prompts)
    table = pair_signal_by_group(prompts, dpo, {"D": "describe", "S": "short", "T": "short"})
    assert list(table.index) == ["describe", "short"]
    d, sh = table.loc["describe"], table.loc["short"]
    assert (d["prompts"], d["pairs"], sh["prompts"], sh["pairs"]) == (1, 1, 2, 1)
    assert (d["chosen_words"], d["rejected_words"], d["share_chosen_longer"]) == (5, 1, 1.0)
    assert (sh["chosen_words"], sh["rejected_words"], sh["share_chosen_longer"]) == (2, 6, 0.0)
    assert (sh["chosen_quality"], sh["rejected_quality"]) == (12, 3)
    # describe: sxy = 3*2 + (-3)(-2) = 12, sxx = 18, syy = 8 -> 12 / 12 = 1
    assert d["quality_length_corr_within_prompt"] == pytest.approx(1.0)
    # short: S sxy = -9 - 9 = -18, sxx 40.5, syy 8; T sxy = 1, sxx 0.5, syy 2 -> -17 / sqrt(41 * 10)
    assert sh["quality_length_corr_within_prompt"] == pytest.approx(-17 / math.sqrt(410))


def test_family_rows_in_results():
    prompts = _prompts()
    dpo = build_dpo_pairs(prompts)
    by_family = pair_signal_by_group(prompts, dpo, {"D": "describe", "S": "short", "T": "short"})
    rows = result_rows(spread_summary(prompts), pair_signal_report(prompts, dpo), notebook="02", model="m",
                       judge_id="oracle", seed=0, profile="toy", protocol="k=2", by_family=by_family)
    found = {(r.split, r.metric): (r.value, r.n) for r in rows if r.split.startswith("family=")}
    assert found[("family=short", "share_chosen_longer")] == (0.0, 1)
    assert found[("family=short", "n_pairs")] == (1.0, 2)
    assert found[("family=describe", "chosen_length_words_mean")] == (5.0, 1)
    assert found[("family=describe", "rejected_length_words_mean")] == (1.0, 1)
    # the metric names match the all-prompts rows
    overall = {r.metric for r in rows if r.split == "all"}
    assert {m for _, m in found} <= overall


def test_group_without_pairs_has_no_length_rows():
    prompts = _prompts()[2:]  # T only: no pair
    dpo = build_dpo_pairs(prompts)
    table = pair_signal_by_group(prompts, dpo, {"T": "short"})
    assert table.loc["short", "pairs"] == 0 and math.isnan(table.loc["short", "chosen_words"])
    rows = result_rows(spread_summary(prompts), pair_signal_report(prompts, dpo), notebook="02", model="m",
                       judge_id="oracle", seed=0, profile="toy", protocol="k=2", by_family=table)
    assert not [r for r in rows if r.split == "family=short" and r.metric == "share_chosen_longer"]


def test_each_sampling_setting_has_its_own_samples_file():
    assert samples_file_name(4, 1.2, 160) == "samples_k4_t1.2_m160.jsonl"
    assert samples_file_name(4, 0.7, 160) == "samples_k4_t0.7_m160.jsonl"
    assert samples_file_name(4, 1.2, 160, top_p=0.9) == "samples_k4_t1.2_p0.9_m160.jsonl"
    assert samples_file_name(4, 1.2, 160, " ", "") == "samples_k4_t1.2_m160.jsonl"  # blank = the default mixes
    names = {samples_file_name(4, 1.2, 160, "describe=1", ""), samples_file_name(4, 1.2, 160, "", "describe=1"),
             samples_file_name(4, 1.2, 160, "describe=1", "describe=1")}
    assert len(names) == 3 and all(n.startswith("samples_k4_t1.2_m160_mix-") for n in names)


def test_funnel_table_beside_the_paper():
    prompts = _prompts()
    dpo = build_dpo_pairs(prompts)
    table = funnel_table(spread_summary(prompts), pair_signal_report(prompts, dpo), answers_frame(prompts))
    ours = table["ours"]
    # pairs from D and S (spreads 6, 9; T's is 1); chosen 12, 12; rejected 6, 3; answers 12, 6, 3, 12, 8, 7
    assert ours["share of prompts giving a pair"] == pytest.approx(2 / 3)
    assert (ours["chosen quality (mean)"], ours["rejected quality (mean)"]) == (12, 4.5)
    assert ours["sampled answer quality (mean)"] == pytest.approx(48 / 6)
    # paper-recipe.md §3.6: 2,700 of 6,134 groups pass the >= 2 rule
    assert table["paper (earlier data version)"]["share of prompts giving a pair"] == pytest.approx(0.440, abs=5e-4)


def test_figure3_distance_by_hand():
    from mmalign_utils.report import figure3_distance, paper_figure3

    assert figure3_distance(paper_figure3()) == pytest.approx(0.0)
    # No correlation at all: the mean of Figure 3's ten values,
    # (0.93 + 0.80 + 0.82 + 0.67 + 0.65 + 0.60 + 0.50 + 0.48 + 0.39 + 0.69) / 10 = 0.653.
    flat = paper_figure3() * 0
    assert figure3_distance(flat) == pytest.approx(0.653)


def test_judge_calibration_rates_the_same_answers_with_each_judge(tmp_path):
    from mmalign_utils.annotate import load_annotations
    from mmalign_utils.annotation_report import annotation_store_dir, judge_calibration
    from mmalign_utils.preference import quality
    from mmalign_utils.sampling import shapesworld_prompts

    prompts = shapesworld_prompts(8, seed=0)
    extra = " There is also a green triangle and a purple hexagon in the top right corner."
    samples = [{"prompt_id": p.prompt_id, "question": p.question,
                "answers": [p.reference_answer, p.reference_answer + extra, "Yes.", "No."]} for p in prompts]
    samples_path = tmp_path / "samples_k4_t0.9_m16.jsonl"
    table = judge_calibration(samples, prompts, ["oracle", "oracle:miss=1"], tmp_path / "annotation", samples_path,
                              progress=False)
    assert list(table.index) == ["oracle:shapesworld-v2", "oracle:shapesworld-v2(miss=1,seed=0)"]
    assert table["figure3_distance"].between(0, 2).all() and (table["n_pairs"] <= 8).all()
    exact, lenient = (
        {row["item_id"]: row["scores"] for row in load_annotations(annotation_store_dir(tmp_path / "annotation",
                                                                                          samples_path, judge_id))}
        for judge_id in table.index)
    assert set(exact) == set(lenient) == {p.prompt_id for p in prompts}
    # Overlooking errors can only raise correctness and helpfulness (rules 3 and 4 subtract caught errors only),
    # and changes nothing else.
    for prompt_id in exact:
        for strict, loose in zip(exact[prompt_id], lenient[prompt_id]):
            assert quality(loose) >= quality(strict)
            assert {a: strict[a] for a in ("coherence", "complexity", "verbosity")} == \
                   {a: loose[a] for a in ("coherence", "complexity", "verbosity")}
    assert any(quality(loose) > quality(strict) for p in exact for strict, loose in zip(exact[p], lenient[p]))


def test_demand_compliance_by_hand():
    from mmalign_utils.annotation_report import demand_compliance

    prompts = [
        # W asks for a word: answers "Yes." (honours) and "Yes, it is there. It is red." (two sentences: does not);
        # qualities 12 and 6 -> one pair, chosen "Yes." alone honours.
        prompt("W", [s(4, 4, 4), s(2, 2, 2)], ["Yes.", "Yes, it is there. It is red."]),
        # V asks for a word too: both answers honour it, qualities 3 and 12 -> a pair in which both honour.
        prompt("V", [s(1, 1, 1), s(4, 4, 4)], ["Red.", "A red circle."]),
        # O asks for one sentence: neither "Red." (1 word) nor the two-sentence answer honours; spread 1, no pair.
        prompt("O", [s(3, 3, 2), s(3, 2, 2)], ["Red.", "It is red. It is big."]),
        # N carries no demand and is left out.
        prompt("N", [s(4, 4, 4), s(1, 1, 1)], ["a", "b"]),
    ]
    dpo = build_dpo_pairs(prompts)
    table = demand_compliance(prompts, dpo, {"W": {"kind": "word"}, "V": {"kind": "word"},
                                             "O": {"kind": "sentence"}})
    assert list(table.index) == ["sentence", "word"]
    word, sentence = table.loc["word"], table.loc["sentence"]
    # word: 3 of 4 answers honour; W is mixed, V is not -> 1/2; 2 pairs, chosen alone honours in W's -> 1/2
    assert (word["prompts"], word["share_answers_honouring"], word["share_prompts_mixed"]) == (2, 0.75, 0.5)
    assert (word["pairs"], word["share_pairs_chosen_only_honours"], word["share_pairs_rejected_only_honours"]) == \
        (2, 0.5, 0.0)
    assert (sentence["prompts"], sentence["share_answers_honouring"], sentence["pairs"]) == (1, 0.0, 0)
    assert math.isnan(sentence["share_pairs_chosen_only_honours"])
    rows = result_rows(spread_summary(prompts), pair_signal_report(prompts, dpo), notebook="02", model="m",
                       judge_id="oracle", seed=0, profile="toy", protocol="k=2", demands=table)
    found = {(r.split, r.metric): (r.value, r.n) for r in rows if r.split.startswith("demand=")}
    assert found[("demand=word", "share_pairs_chosen_only_honours")] == (0.5, 2)
    assert ("demand=sentence", "share_pairs_chosen_only_honours") not in found
