"""Pair rules, dataset builders, ablation subsets, pair-signal report and dataset cards (mmalign_utils.preference).

Expected values are worked out by hand from the paper's rule (§3.4) in the comments next to each case.
"""
from __future__ import annotations

import math

import pytest
from datasets import Image as ImageFeature
from datasets import load_from_disk
from PIL import Image

from mmalign_utils.preference import (
    ALL_FOURS, AnnotatedPrompt, build_dpo_pairs, build_rejection_sampling, build_sft, build_steerlm, dataset_card,
    flip_labels, pair_signal_report, provenance, quality, save_dataset, steerlm_attribute_string, steerlm_question,
    subset_by_image,
)


def s(h: int, c: int, k: int, x: int = 2, v: int = 2) -> dict:
    return {"helpfulness": h, "correctness": c, "coherence": k, "complexity": x, "verbosity": v}


def img(shade: int) -> Image.Image:
    return Image.new("RGB", (8, 8), (shade, 10, 20))


def prompt(pid: str, scores: list[dict], answers: list[str] | None = None, **kwargs) -> AnnotatedPrompt:
    answers = answers or [f"{pid} answer {i}" for i in range(len(scores))]
    kwargs.setdefault("image", img(len(pid)))
    kwargs.setdefault("image_id", f"img-{pid}")
    return AnnotatedPrompt(prompt_id=pid, question=f"question {pid}?", answers=answers, scores=scores, **kwargs)


def with_qualities(pid: str, qualities: list[int]) -> AnnotatedPrompt:
    """A prompt whose answers have the given quality sums (split over the three quality attributes)."""
    def split(q: int) -> dict:
        h = min(4, q)
        c = min(4, q - h)
        return s(h, c, q - h - c)
    return prompt(pid, [split(q) for q in qualities])


def rows_by_id(ds) -> dict:
    return {row["prompt_id"]: row for row in ds}


# ---------------------------------------------------------------------------------------------- quality + contract

def test_quality_is_sum_of_helpfulness_correctness_coherence():
    assert quality(s(4, 3, 2, x=4, v=4)) == 9
    assert quality(s(0, 0, 0, x=4, v=4)) == 0
    assert quality(s(4, 4, 4, x=0, v=0)) == 12


@pytest.mark.parametrize("bad", [
    {"helpfulness": 4, "correctness": 4, "coherence": 4, "complexity": 4},  # verbosity missing
    s(5, 0, 0),  # outside 0-4
    s(True, 0, 0),  # a bool is not a score
    s(2.5, 0, 0),  # not an integer
])
def test_annotated_prompt_rejects_bad_scores(bad):
    with pytest.raises(ValueError, match="p1"):
        prompt("p1", [s(1, 1, 1), bad])


def test_annotated_prompt_contract_checks():
    with pytest.raises(ValueError, match="2 answers but 1 score"):
        AnnotatedPrompt("p", img(0), "q", ["a", "b"], [s(1, 1, 1)])
    with pytest.raises(ValueError, match="<image>"):
        AnnotatedPrompt("p", img(0), "<image>\nq", ["a"], [s(1, 1, 1)])


def test_default_image_id_groups_identical_pixels(tmp_path):
    a = AnnotatedPrompt("a", img(7), "q", ["x"], [s(1, 1, 1)])
    b = AnnotatedPrompt("b", img(7), "q2", ["x"], [s(1, 1, 1)])
    c = AnnotatedPrompt("c", img(8), "q", ["x"], [s(1, 1, 1)])
    assert a.image_id == b.image_id != c.image_id
    path = tmp_path / "p.png"
    img(1).save(path)
    assert AnnotatedPrompt("d", str(path), "q", ["x"], [s(1, 1, 1)]).image_id == str(path)


# ---------------------------------------------------------------------------------------------- paper pair rule

def test_prompts_with_gap_below_two_are_dropped_and_gap_two_kept():
    ds = build_dpo_pairs([with_qualities("flat", [6, 7, 7, 6]),  # max - min = 1 < 2: dropped
                          with_qualities("edge", [5, 7, 6, 6])])  # max - min = 2: kept
    assert list(ds["prompt_id"]) == ["edge"]
    row = ds[0]
    # best is index 1 (7); only index 0 (5) is <= 7 - 2
    assert (row["chosen_index"], row["rejected_index"]) == (1, 0)
    assert (row["chosen_quality"], row["rejected_quality"], row["margin"]) == (7, 5, 2.0)


def test_ties_choose_first_argmax():
    ds = build_dpo_pairs([with_qualities("tie", [9, 12, 12, 3])])
    assert ds[0]["chosen_index"] == 1
    # with min_gap 2 the candidates below 12 are indices 0 (9) and 3 (3), never the tied index 2; the draw is
    # seeded per prompt id, so 30 copies of the group sample 30 independent draws in one build
    many = build_dpo_pairs([with_qualities(f"tie{i}", [9, 12, 12, 3]) for i in range(30)])
    assert set(many["chosen_index"]) == {1} and set(many["rejected_index"]) == {0, 3}


def test_rejected_drawn_only_from_answers_at_least_two_below_and_all_of_them_reachable():
    # k = 5; candidates: quality <= 10 -> indices 2, 3, 4 (60 independent draws: one per prompt id)
    ds = build_dpo_pairs([with_qualities(f"g{i}", [12, 11, 10, 9, 3]) for i in range(60)])
    assert set(ds["rejected_index"]) == {2, 3, 4}


def test_one_pair_per_prompt_and_columns_describe_the_pair():
    prompts = [with_qualities(f"p{i}", [12, 3, 4, 11 - i]) for i in range(5)]
    ds = build_dpo_pairs(prompts, seed=3)
    assert len(ds) == 5 and len(set(ds["prompt_id"])) == 5
    by_id = {p.prompt_id: p for p in prompts}
    for row in ds:
        p = by_id[row["prompt_id"]]
        assert row["prompt"] == [{"role": "user", "content": [{"type": "image", "text": None},
                                                              {"type": "text", "text": p.question}]}]
        assert row["chosen"] == [{"role": "assistant",
                                  "content": [{"type": "text", "text": p.answers[row["chosen_index"]]}]}]
        assert row["rejected"][0]["content"][0]["text"] == p.answers[row["rejected_index"]]
        for attribute in ("helpfulness", "correctness", "coherence", "complexity", "verbosity"):
            assert row[f"chosen_{attribute}"] == p.scores[row["chosen_index"]][attribute]
            assert row[f"rejected_{attribute}"] == p.scores[row["rejected_index"]][attribute]
        assert row["margin"] == row["chosen_quality"] - row["rejected_quality"]
        assert row["images"][0].size == (8, 8) and row["images"][0].getpixel((0, 0)) == (2, 10, 20)
    assert ds.features["images"].feature == ImageFeature()


def test_seed_determinism_and_independence_from_prompt_order():
    prompts = [with_qualities(f"p{i}", [12, 8, 9, 10, 3]) for i in range(8)]  # candidates 1, 2, 3, 4
    a = rows_by_id(build_dpo_pairs(prompts, seed=5))
    b = rows_by_id(build_dpo_pairs(list(reversed(prompts)), seed=5))
    assert {k: r["rejected_index"] for k, r in a.items()} == {k: r["rejected_index"] for k, r in b.items()}
    by_seed = [tuple(build_dpo_pairs(prompts, seed=seed)["rejected_index"]) for seed in range(10)]
    assert len(set(by_seed)) > 1  # different seeds pick different rejected answers


def test_path_images_are_checked_and_loaded(tmp_path):
    path = tmp_path / "im.png"
    img(99).save(path)
    ds = build_dpo_pairs([prompt("p", [s(4, 4, 4), s(0, 0, 0)], image=str(path))])
    assert ds[0]["images"][0].getpixel((1, 1)) == (99, 10, 20)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        build_dpo_pairs([prompt("q", [s(4, 4, 4), s(0, 0, 0)], image=str(tmp_path / "missing.png"))])


def test_duplicate_prompt_ids_rejected():
    with pytest.raises(ValueError, match="twice"):
        build_dpo_pairs([with_qualities("p", [12, 0]), with_qualities("p", [12, 0])])


# ---------------------------------------------------------------------------------------------- other strategies

def test_per_attribute_strategy_ranks_by_that_attribute_only():
    # quality: [9, 8, 4] -> paper picks 0; correctness: [1, 4, 2] -> picks 1 and rejects only 0 (1 <= 4 - 2)
    p = prompt("a", [s(4, 1, 4), s(2, 4, 2), s(1, 2, 1)])
    assert build_dpo_pairs([p])[0]["chosen_index"] == 0
    row = build_dpo_pairs([p], strategy="correctness")[0]
    assert (row["chosen_index"], row["rejected_index"], row["margin"]) == (1, 0, 3.0)
    # the quality columns still hold the quality sum, whatever the ranking
    assert (row["chosen_quality"], row["rejected_quality"]) == (8, 9)
    # verbosity all equal -> no pair
    assert len(build_dpo_pairs([p], strategy="verbosity")) == 0


def test_all_pairs_and_best_vs_worst():
    p = with_qualities("p", [9, 6, 8, 9])
    pairs = build_dpo_pairs([p], strategy="all_pairs")
    # ordered pairs with gap >= 2: (0,1) 3, (2,1) 2, (3,1) 3; 9 vs 8 is only 1
    assert list(zip(pairs["chosen_index"], pairs["rejected_index"])) == [(0, 1), (2, 1), (3, 1)]
    assert list(pairs["margin"]) == [3.0, 2.0, 3.0]
    assert len(build_dpo_pairs([p], strategy="all_pairs", min_gap=4)) == 0
    bw = build_dpo_pairs([p], strategy="best_vs_worst")
    assert list(zip(bw["chosen_index"], bw["rejected_index"])) == [(0, 1)]


def test_custom_score_function():
    def verbosity_minus_correctness(scores):
        return scores["verbosity"] - scores["correctness"]
    p = prompt("p", [s(4, 4, 4, v=0), s(0, 0, 0, v=4)])  # custom: [-4, 4]
    row = build_dpo_pairs([p], score=verbosity_minus_correctness)[0]
    assert (row["chosen_index"], row["rejected_index"], row["margin"]) == (1, 0, 8.0)
    assert provenance(build_dpo_pairs([p], score=verbosity_minus_correctness))[0]["score"] == \
        "verbosity_minus_correctness"


def test_bad_strategy_arguments():
    p = with_qualities("p", [12, 0])
    with pytest.raises(ValueError, match="unknown strategy"):
        build_dpo_pairs([p], strategy="pareto")
    with pytest.raises(ValueError, match="min_gap"):
        build_dpo_pairs([p], min_gap=0)
    with pytest.raises(ValueError, match="already ranks"):
        build_dpo_pairs([p], strategy="helpfulness", score="quality")


def test_provenance_records_the_build():
    ds = build_dpo_pairs([with_qualities("a", [12, 0]), with_qualities("b", [5, 5])], seed=7)
    assert provenance(ds) == [{"step": "build_dpo_pairs", "strategy": "paper", "pairing": "paper",
                               "score": "quality", "min_gap": 2, "seed": 7, "prompts_in": 2, "prompts_kept": 1,
                               "rows": 1}]


# ---------------------------------------------------------------------------------------------- RS / SteerLM / SFT

def test_rejection_sampling_best_of_k_with_first_argmax_on_ties():
    prompts = [with_qualities("a", [10, 12, 12, 5]), with_qualities("b", [3, 2, 7, 7])]
    ds = build_rejection_sampling(prompts)
    assert list(ds["answer_index"]) == [1, 2]
    assert list(ds["quality"]) == [12, 7]
    row = ds[0]
    assert row["messages"][0]["content"][1]["text"] == "question a?"
    assert row["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "a answer 1"}]}
    assert list(build_rejection_sampling(prompts, min_quality=12)["prompt_id"]) == ["a"]


def test_steerlm_strings_exactly():
    assert steerlm_attribute_string(s(3, 4, 2, x=1, v=0)) == \
        "helpfulness:3,correctness:4,coherence:2,complexity:1,verbosity:0"
    assert steerlm_question("What is shown?", ALL_FOURS) == \
        "What is shown?\nhelpfulness:4,correctness:4,coherence:4,complexity:4,verbosity:4"
    with pytest.raises(ValueError):
        steerlm_attribute_string({"helpfulness": 4})


def test_build_steerlm_keeps_all_answers_with_their_own_attributes():
    p = prompt("p", [s(4, 4, 4, x=3, v=1), s(0, 1, 2, x=3, v=4)], answers=["good", "bad"])
    ds = build_steerlm([p, with_qualities("q", [1, 2, 3])])
    assert len(ds) == 5
    first, second = ds[0], ds[1]
    assert first["messages"][0]["content"][1]["text"] == \
        "question p?\nhelpfulness:4,correctness:4,coherence:4,complexity:3,verbosity:1"
    assert second["messages"][0]["content"][1]["text"] == \
        "question p?\nhelpfulness:0,correctness:1,coherence:2,complexity:3,verbosity:4"
    assert [first["messages"][1]["content"][0]["text"], second["messages"][1]["content"][0]["text"]] == ["good", "bad"]
    assert second["attributes"] == "helpfulness:0,correctness:1,coherence:2,complexity:3,verbosity:4"
    assert second["question"] == "question p?"


def test_build_sft_reference_and_judge_sources():
    a = prompt("a", [s(1, 1, 1)], reference_answer="gold a", judge_answer="judge a")
    b = prompt("b", [s(1, 1, 1)], reference_answer=None, judge_answer="judge b")
    with pytest.warns(UserWarning, match=r"1 of 2 prompts have no reference answer.*'b'"):
        ref = build_sft([a, b], source="reference")
    assert list(ref["prompt_id"]) == ["a"]
    assert ref[0]["messages"][1]["content"][0]["text"] == "gold a"
    judge = build_sft([a, b], source="judge")
    assert [m[1]["content"][0]["text"] for m in judge["messages"]] == ["judge a", "judge b"]
    assert set(judge["answer_source"]) == {"judge"}
    with pytest.raises(ValueError, match="no reference answer"):
        build_sft([a, b], on_missing="error")
    with pytest.raises(ValueError, match="source"):
        build_sft([a], source="gemini")


# ---------------------------------------------------------------------------------------------- ablations

def _pool(n_images: int = 20) -> list[AnnotatedPrompt]:
    # two prompts for even images, one for odd: 30 prompts on 20 images
    prompts = []
    for i in range(n_images):
        for j in range(2 if i % 2 == 0 else 1):
            prompts.append(prompt(f"p{i}-{j}", [s(4, 4, 4), s(0, 0, 0)], image_id=f"image{i}"))
    return prompts


def test_subset_by_image_nested_sizes_and_whole_images():
    prompts = _pool()
    images = {}
    for fraction, expected_images in ((0.25, 5), (0.5, 10), (0.75, 15), (1.0, 20)):
        subset = subset_by_image(prompts, fraction, seed=0)
        images[fraction] = {p.image_id for p in subset}
        assert len(images[fraction]) == expected_images
        # every prompt of a chosen image is kept
        assert subset == [p for p in prompts if p.image_id in images[fraction]]
    assert images[0.25] < images[0.5] < images[0.75] < images[1.0]
    assert {p.image_id for p in subset_by_image(prompts, 0.25, seed=1)} != images[0.25]


def test_subset_by_image_on_dataset_matches_prompt_list_and_records_provenance():
    prompts = _pool()
    ds = build_dpo_pairs(prompts)
    sub = subset_by_image(ds, 0.5, seed=0)
    assert set(sub["image_id"]) == {p.image_id for p in subset_by_image(prompts, 0.5, seed=0)}
    assert [step["step"] for step in provenance(sub)] == ["build_dpo_pairs", "subset_by_image"]
    assert [step["step"] for step in provenance(ds)] == ["build_dpo_pairs"]  # parent untouched
    with pytest.raises(ValueError):
        subset_by_image(ds, 0.0)


def test_flip_labels_exact_fraction_swaps_everything_and_is_recorded():
    prompts = [with_qualities(f"p{i}", [12, 2 + (i % 3)]) for i in range(8)]
    ds = build_dpo_pairs(prompts)
    flipped = flip_labels(ds, 0.25, seed=0)
    assert sum(flipped["flipped"]) == 2  # 0.25 x 8
    for before, after in zip(ds, flipped):
        if after["flipped"]:
            assert after["chosen"] == before["rejected"] and after["rejected"] == before["chosen"]
            assert (after["chosen_index"], after["rejected_index"]) == (before["rejected_index"],
                                                                        before["chosen_index"])
            assert (after["chosen_quality"], after["rejected_quality"]) == (before["rejected_quality"],
                                                                            before["chosen_quality"])
            assert after["chosen_verbosity"] == before["rejected_verbosity"]
            assert after["margin"] == -before["margin"]
        else:
            assert after == {**before, "flipped": False}
    half = flip_labels(ds, 0.5, seed=0)
    assert sum(half["flipped"]) == 4
    quarter_rows = {i for i, f in enumerate(flipped["flipped"]) if f}
    assert quarter_rows < {i for i, f in enumerate(half["flipped"]) if f}
    assert sum(flip_labels(ds, 0.0)["flipped"]) == 0
    assert provenance(half)[-1] == {"step": "flip_labels", "fraction": 0.5, "seed": 0, "rows_flipped": 4, "rows": 8}
    with pytest.raises(ValueError, match="already"):
        flip_labels(flipped, 0.5)


def test_flip_labels_swaps_reference_logps():
    from datasets import Dataset
    ds = Dataset.from_dict({"prompt": [[]], "chosen": [[]], "rejected": [[]], "ref_chosen_logps": [-1.0],
                            "ref_rejected_logps": [-5.0]})
    out = flip_labels(ds, 1.0)
    assert (out[0]["ref_chosen_logps"], out[0]["ref_rejected_logps"], out[0]["flipped"]) == (-5.0, -1.0, True)


# ---------------------------------------------------------------------------------------------- report + card

def _report_prompts() -> list[AnnotatedPrompt]:
    return [
        # A: qualities [12, 11, 3, 11], words [4, 2, 1, 3]; chosen 0, only index 2 is <= 10 -> rejected 2
        prompt("A", [s(4, 4, 4, x=3, v=2), s(4, 4, 3), s(1, 1, 1, x=0, v=1), s(4, 3, 4, x=2, v=3)],
               answers=["one two three four", "one two", "one", "one two three"]),
        # B: qualities [7, 6, 7, 7] -> spread 1 -> no pair; words all 1
        prompt("B", [s(3, 2, 2), s(2, 2, 2), s(2, 3, 2), s(3, 2, 2)], answers=["w", "w", "w", "w"]),
        # C: qualities [10, 4, 9, 9], words [6, 2, 3, 3]; chosen 0, only index 1 is <= 8 -> rejected 1
        prompt("C", [s(4, 3, 3, x=4, v=4), s(1, 2, 1, x=1, v=0), s(3, 3, 3), s(3, 3, 3)],
               answers=["w w w w w w", "w w", "w w w", "w w w"]),
    ]


def test_pair_signal_report_hand_computed():
    prompts = _report_prompts()
    report = pair_signal_report(prompts, build_dpo_pairs(prompts))
    assert report["n_prompts"] == 3 and report["n_prompts_kept"] == 2 and report["n_pairs"] == 2
    assert report["share_prompts_kept"] == pytest.approx(2 / 3)
    assert report["quality_spread_mean"] == pytest.approx((9 + 1 + 6) / 3)
    assert report["quality_spread_mean_kept"] == pytest.approx((9 + 6) / 2)
    assert report["chosen"] == pytest.approx({"helpfulness": 4.0, "correctness": 3.5, "coherence": 3.5,
                                              "complexity": 3.5, "verbosity": 3.0, "quality": 11.0,
                                              "length_words": 5.0})
    assert report["rejected"] == pytest.approx({"helpfulness": 1.0, "correctness": 1.5, "coherence": 1.0,
                                                "complexity": 0.5, "verbosity": 0.5, "quality": 3.5,
                                                "length_words": 1.5})
    assert report["share_chosen_longer"] == 1.0
    assert report["n_flipped"] == 0
    # centred per prompt: A sxy 13.5, sxx 52.75, syy 5; B sxx 0.75 (lengths constant); C sxy 10, sxx 22, syy 9
    assert report["quality_length_corr_within_prompt"] == pytest.approx(23.5 / math.sqrt(75.5 * 14))


def test_dataset_card_content():
    prompts = _report_prompts()
    ds = build_dpo_pairs(prompts, seed=4)
    card = dataset_card(ds, kind="dpo", judge_model="gemini:gemini-2.5-flash", prompt_hash="ab12cd",
                        filters={"min_gap": 2, "complete_groups_only": True}, seed=4,
                        counts={"prompts_annotated": 3, "pairs": 2})
    for expected in ("| kind | dpo |", "| rows | 2 |", "| judge model | gemini:gemini-2.5-flash |",
                     "| judge prompt sha256 | ab12cd |", "| seed | 4 |", "- min_gap: 2",
                     "- complete_groups_only: True", "- prompts_annotated: 3",
                     "1. `build_dpo_pairs`:", "strategy=paper",
                     # means worked out in test_pair_signal_report_hand_computed
                     "| chosen | 4.000 | 3.500 | 3.500 | 3.500 | 3.000 | 11.000 | 5.000 |",
                     "| rejected | 1.000 | 1.500 | 1.000 | 0.500 | 0.500 | 3.500 | 1.500 |",
                     "Mean margin: 7.500.", "- `chosen`: conversation"):
        assert expected in card, expected
    with pytest.raises(ValueError, match="kind"):
        dataset_card(ds, kind="ppo", judge_model="x", prompt_hash="y")
    rs_card = dataset_card(build_rejection_sampling(prompts), kind="rejection_sampling", judge_model="x",
                           prompt_hash="y")
    # best answers: A 12 (4 words), B 7 (1 word, index 0), C 10 (6 words)
    assert "mean quality (helpfulness + correctness + coherence): 9.667" in rs_card
    assert "mean answer length: 3.667 words" in rs_card


def test_save_dataset_round_trip(tmp_path):
    ds = flip_labels(build_dpo_pairs(_report_prompts()), 0.5)
    card = dataset_card(ds, kind="dpo", judge_model="scripted:test", prompt_hash="0" * 64)
    out = save_dataset(ds, tmp_path / "dpo", card)
    assert (out / "README.md").read_text() == card
    loaded = load_from_disk(str(out))
    assert len(loaded) == 2 and loaded.features == ds.features
    assert loaded[0]["chosen"] == ds[0]["chosen"]
    assert loaded[0]["images"][0].tobytes() == ds[0]["images"][0].tobytes()
    assert provenance(loaded) == provenance(ds)
