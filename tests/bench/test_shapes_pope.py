"""Shapes-POPE: construction (balance, negatives really absent, strategies, held-out seeds) and scoring through
pope.score with hand-computed values."""
from __future__ import annotations

import math
import random
import re

import pytest

from mmalign_utils.bench.shapes import pope_edition
from mmalign_utils.bench.shapes.common import BENCH_SEED_BASE, bench_scene_seed
from mmalign_utils.world import vocab
from mmalign_utils.world.scenes import Scene, SceneObject

QUESTION = re.compile(r"^Is there (a|an) (\w+) (\w+) in the image\?$")


@pytest.fixture(scope="module")
def items():
    return pope_edition.build(n_per_split=30, seed=0)


def test_each_split_is_balanced_and_labels_match_the_scene(items):
    for split in ("random", "popular", "adversarial"):
        rows = [it for it in items if it["split"] == split]
        assert len(rows) == 30
        assert sum(it["label"] == "yes" for it in rows) == 15
        assert [it["question_id"] for it in rows] == list(range(1, 31))
    for it in items:
        article, color, shape = QUESTION.match(it["question"]).groups()
        assert article == ("an" if color[0] in "aeiou" else "a")
        present = (color, shape) in Scene.from_dict(it["scene"]).combos()
        assert present == (it["label"] == "yes"), it


def test_yes_questions_are_the_same_in_every_split(items):
    yes = {split: [(it["scene"]["seed"], it["question"]) for it in items
                   if it["split"] == split and it["label"] == "yes"] for split in ("random", "popular", "adversarial")}
    assert yes["random"] == yes["popular"] == yes["adversarial"]


def test_scene_seeds_are_held_out_and_the_build_is_deterministic(items):
    assert all(it["scene"]["seed"] >= BENCH_SEED_BASE for it in items)
    assert bench_scene_seed("shapes-pope", 2, 5) == 2**32 + 1 * 10**9 + 2 * 10**6 + 5
    assert pope_edition.build(n_per_split=30, seed=0) == items
    assert pope_edition.build(n_per_split=30, seed=1) != items
    with pytest.raises(ValueError, match="seed"):
        bench_scene_seed("shapes-pope", 1000, 0)


def test_odd_sizes_round_down_and_tiny_sizes_are_refused():
    assert len(pope_edition.build(n_per_split=7, seed=0)) == 3 * 6
    with pytest.raises(ValueError, match="at least 2"):
        pope_edition.build(n_per_split=1)


def _hand_scene() -> Scene:
    return Scene(objects=(SceneObject("circle", "red", "large", 0, 0), SceneObject("square", "blue", "small", 1, 1)),
                 seed=7)


def test_negative_strategies_on_a_hand_built_scene():
    scene = _hand_scene()
    rng = random.Random(0)
    # a red circle and a blue square: the swapped combinations are the confusers
    assert set(pope_edition.negative_combos(scene, "adversarial", 2, rng)) == {("blue", "circle"), ("red", "square")}
    # the two favourite combinations not in the scene (weight 4): yellow star and green triangle
    assert set(pope_edition.negative_combos(scene, "popular", 2, rng)) == {("yellow", "star"), ("green", "triangle")}
    randoms = pope_edition.negative_combos(scene, "random", 22, rng)
    assert len(set(randoms)) == 22 and not set(randoms) & scene.combos()  # 24 combinations - 2 present


def test_built_negatives_follow_their_strategy(items):
    for it in items:
        if it["label"] != "no":
            continue
        scene = Scene.from_dict(it["scene"])
        combo = (it["query"]["color"], it["query"]["shape"])
        absent = pope_edition.absent_combos(scene)
        if it["split"] == "popular":  # never a less frequent combination than the highest absent weight allows
            asked_here = [(x["query"]["color"], x["query"]["shape"]) for x in items
                          if x["split"] == "popular" and x["label"] == "no" and x["scene"] == it["scene"]]
            lowest_asked = min(vocab.COMBO_WEIGHTS[c] for c in asked_here)
            assert all(vocab.COMBO_WEIGHTS[c] <= lowest_asked for c in absent if c not in asked_here)
        if it["split"] == "adversarial":
            colors, shapes = {o.color for o in scene.objects}, {o.shape for o in scene.objects}
            assert combo[0] in colors or combo[1] in shapes


def test_requests_use_llavas_pope_prompt_and_yes_no_choices(items):
    req = pope_edition.requests(items)[0]
    assert req.id == items[0]["id"]
    assert req.text == items[0]["question"] + "\nAnswer the question using a single word or phrase."
    assert req.choices == ("Yes", "No") and req.scene == items[0]["scene"]


def test_scoring_hand_answers():
    items = pope_edition.build(n_per_split=4, seed=3)  # 2 yes + 2 no per split, yes/no alternating
    answers = {}
    for it in items:
        if it["split"] == "random":  # all right: F1 1
            answers[it["id"]] = "Yes" if it["label"] == "yes" else "No"
        elif it["split"] == "popular":  # always yes: TP 2, FP 2 -> P 0.5, R 1, F1 2/3, yes-ratio 1
            answers[it["id"]] = "Yes, there is."
        else:  # first yes right, second yes missed, both no right: TP 1, FN 1, TN 2 -> P 1, R 0.5, F1 2/3
            answers[it["id"]] = "Yes" if it["question_id"] == 1 else "No."
    result = pope_edition.score(items, answers)
    values = {(m["split"], m["metric"]): m for m in result["metrics"]}
    assert values[("random", "f1")]["value"] == 1.0
    assert values[("popular", "f1")]["value"] == pytest.approx(2 / 3)
    assert values[("popular", "yes_ratio")]["value"] == 1.0
    assert values[("popular", "acc")]["value"] == 0.5
    assert values[("adversarial", "recall")]["value"] == 0.5
    assert values[("adversarial", "precision")]["value"] == 1.0
    assert values[("all", "f1_mean")]["value"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert result["official"]["protocol"] == "llava"
    assert values[("all", "f1_mean")]["stat"] == "f1_mean_splits"


def test_llava_protocol_gives_nan_f1_when_nothing_is_answered_yes():
    items = pope_edition.build(n_per_split=2, seed=0)
    result = pope_edition.score(items, {it["id"]: "No" for it in items})
    assert math.isnan(result["official"]["f1_mean"])  # 0/0 precision, as the official script (no guards)
