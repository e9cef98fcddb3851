"""Shapes-MMBench: CircularEval rotations built right, MMBench's prompt, and mmbench.score on hand answers."""
from __future__ import annotations

import pytest

from mmalign_utils.bench.shapes import mmbench_edition
from mmalign_utils.world.scenes import Scene

LETTERS = "ABCD"


@pytest.fixture(scope="module")
def rows():
    return mmbench_edition.build(n_per_split=5, seed=0)


def test_every_group_has_four_rotations_with_shifted_options(rows):
    assert len(rows) == 20
    for group in range(5):
        members = sorted((r for r in rows if r["group"] == group), key=lambda r: r["rotation"])
        assert [r["id"] for r in members] == [group, group + 10**6, group + 2 * 10**6, group + 3 * 10**6]
        texts = list(members[0]["options"].values())
        right_text = members[0]["options"][members[0]["answer"]]
        for k, r in enumerate(members):
            assert list(r["options"].values()) == texts[k:] + texts[:k]  # shifted left by k
            assert r["options"][r["answer"]] == right_text  # the answer follows its text
            assert list(r["options"]) == list(LETTERS)


def test_the_right_option_is_true_of_the_scene(rows):
    for r in rows:
        if r["rotation"] != 0:
            continue
        scene = Scene.from_dict(r["scene"])
        right = r["options"][r["answer"]]
        if r["category"] == "presence":
            color, shape = right.split()
            assert (color, shape) in scene.combos()
            assert all(tuple(o.split()) not in scene.combos() for k, o in r["options"].items() if k != r["answer"])
        if r["category"] == "absence":
            assert tuple(right.split()) not in scene.combos()
        if r["category"] == "count":
            shape = r["question"].split()[2][:-1]  # "How many circles are in the image?"
            assert int(right) == scene.count(shape=shape)


def test_requests_use_llavas_single_letter_prompt(rows):
    req = mmbench_edition.requests(rows)[0]
    row = rows[0]
    expected = row["question"] + "".join(f"\n{k}. {v}" for k, v in row["options"].items()) + \
        "\nAnswer with the option's letter from the given choices directly."
    assert req.text == expected
    assert req.choices == ("A", "B", "C", "D") and req.id == row["id"]


def test_circular_and_vanilla_accuracy_on_hand_answers(rows):
    answers = {}
    for r in rows:
        right, text = r["answer"], r["options"][r["answer"]]
        wrong = next(k for k in LETTERS if k != right)
        if r["group"] in (0, 1):
            answers[r["id"]] = right  # all four rotations right
        elif r["group"] == 2:
            answers[r["id"]] = f"The answer is {text}"  # right by option text: opencompass rule 2
        elif r["group"] == 3:
            answers[r["id"]] = right if r["rotation"] == 0 else wrong  # right once, wrong later
        else:
            answers[r["id"]] = "I am not sure."  # unreadable, no judge: wrong
    result = mmbench_edition.score(rows, answers)
    values = {(m["split"], m["metric"]): m["value"] for m in result["metrics"]}
    assert values[("all", "circular_acc")] == pytest.approx(3 / 5)
    assert values[("all", "vanilla_acc")] == pytest.approx(4 / 5)
    assert result["official"]["protocol"] == "opencompass"
    by_category = [m for m in result["metrics"] if m["split"] != "all"]
    assert sum(m["n"] for m in by_category) == 5
