"""Shapes-ObjHal (CHAIR) and Shapes-AMBER: class tokens from the grounding checker, and the official scorers'
numbers on hand-built scenes and descriptions (expected values worked out by hand in the comments)."""
from __future__ import annotations

import pytest

from mmalign_utils.bench.shapes import hallucination as hal
from mmalign_utils.world.scenes import Scene, SceneObject


def _scene() -> Scene:
    # a large red circle top left, a small blue square in the center
    return Scene(objects=(SceneObject("circle", "red", "large", 0, 0), SceneObject("square", "blue", "small", 1, 1)),
                 seed=11)


def test_class_tokens_skip_denied_and_questioned_objects():
    text = ("A large red ball sits in the top left corner. There is no star. Is there a green triangle? "
            "Two circles and a pink hexagon.")
    assert hal.claimed_classes(text) == ["red circle", "circle", "pink hexagon"]
    assert set(hal.claimed_classes("A red object and something.")) == {"red object"}
    assert set(hal.class_vocabulary()) >= {"red circle", "circle", "red object", "pink hexagon", "hexagon"}


def test_scene_classes_and_confusers():
    scene = _scene()
    assert hal.scene_classes(scene) == {"red circle", "blue square", "circle", "square", "red object", "blue object"}
    assert hal.confusers(scene) == ["blue circle", "red square"]  # each colour on the other shape


def _objhal_items(texts: list[str]) -> tuple[list[dict], dict]:
    scene = _scene()
    items = [{"id": i, "org_idx": i, "image_id": scene.seed, "question": "Describe the image.", "image": None,
              "gt_objects": sorted(hal.scene_classes(scene)), "scene": scene.to_dict()} for i in range(len(texts))]
    return items, {i: t for i, t in enumerate(texts)}


def test_chair_on_hand_descriptions():
    items, answers = _objhal_items([
        "A red circle and a green triangle.",  # mentions: red circle, green triangle (hallucinated)
        "There is a blue square in the center.",  # mention: blue square
        "I see nothing special.",  # no object mention
    ])
    result = hal.score_objhal(items, answers)
    values = {m["metric"]: m["value"] for m in result["metrics"]}
    assert values["CHAIRs"] == pytest.approx(1 / 3)  # 1 of 3 responses hallucinates
    assert values["CHAIRs_refine"] == pytest.approx(1 / 2)  # 1 of the 2 responses with a mention
    assert values["CHAIRi"] == pytest.approx(1 / 3)  # 1 of 3 mentions
    assert values["obj_rec"] == pytest.approx(2 / 18)  # red circle + blue square of 3 x 6 ground-truth classes
    assert result["official"]["per_item"][0]["hallucinated"] == [("green triangle", "green triangle")]


def test_amber_generative_on_hand_descriptions():
    scene = _scene()
    item = {"id": 1, "question": hal.AMBER_DESCRIBE, "type": "generative", "dimension": "generative",
            "sub_dimension": None, "category": "generative", "truth": ["blue square", "red circle"],
            "hallu": hal.confusers(scene), "scene": scene.to_dict()}
    # red circle covered; blue circle is a confuser (cog hit) and hallucinated; hexagon hallucinated
    result = hal.score_amber([item], {1: "A red circle, a blue circle and a hexagon."})
    g = result["official"]["generative"]
    assert g["CHAIR"] == 66.6  # 2 / (3 + 0.001) = 66.64%
    assert g["Cover"] == 50.0  # 1 / (2 + 0.001)
    assert g["Hal"] == 100.0  # the one response hallucinates
    assert g["Cog"] == 50.0  # blue circle, 1 of 2 confusers
    # a bare shape covers the object of that shape through the association table
    result = hal.score_amber([item], {1: "There is a square."})
    assert result["official"]["generative"]["Cover"] == 50.0
    assert result["official"]["generative"]["CHAIR"] == 0.0


def test_amber_discriminative_questions_are_true_of_their_scene():
    items = hal.build_amber(n_per_split=6, seed=0)
    assert [it["id"] for it in items] == list(range(1, len(items) + 1))
    disc = [it for it in items if it["dimension"] != "generative"]
    assert len(disc) == 18 and len(items) == 24
    for it in disc:
        scene = Scene.from_dict(it["scene"])
        q = it["question"]
        if it["dimension"] == "existence":
            assert it["label"] == "no"
            color, shape = q.removeprefix("Is there ").removesuffix(" in this image?").split()[-2:]
            assert (color, shape) not in scene.combos()
        elif it["sub_dimension"] == "state":
            _, _, color, shape, size = q.rstrip("?").split()
            obj = scene.objects[scene.matching(shape=shape, color=color)[0]]
            assert (obj.size == size) == (it["label"] == "yes")
        elif it["sub_dimension"] == "number":
            words = q.rstrip("?").split()
            number = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}[words[2]]
            shape = words[3].removesuffix("s")
            assert (scene.count(shape=shape) == number) == (it["label"] == "yes")
        else:
            words = q.rstrip("?").split()  # Is the red circle next to the blue square
            a = scene.matching(color=words[2], shape=words[3])[0]
            b = scene.matching(color=words[7], shape=words[8])[0]
            assert scene.holds(a, "next_to", b) == (it["label"] == "yes")
            assert it["type"] == ("discriminative-relation" if it["label"] == "yes" else "relation")
    for dim in ("attribute", "relation"):
        labels = [it["label"] for it in disc if it["dimension"] == dim]
        assert labels.count("yes") == labels.count("no")


def test_amber_discriminative_scoring_with_no_positive():
    scene = _scene().to_dict()
    base = {"scene": scene, "image": "x.png", "image_path": None, "category": "x"}
    items = [
        {**base, "id": 1, "question": "Is there a blue circle in this image?", "label": "no",
         "type": "discriminative-hallucination", "dimension": "existence", "sub_dimension": None},
        {**base, "id": 2, "question": "Is the red circle large?", "label": "yes",
         "type": "discriminative-attribute-state", "dimension": "attribute", "sub_dimension": "state"},
        {**base, "id": 3, "question": "Is the blue square large?", "label": "no",
         "type": "discriminative-attribute-state", "dimension": "attribute", "sub_dimension": "state"},
        {**base, "id": 4, "question": "Is the red circle next to the blue square?", "label": "no",
         "type": "relation", "dimension": "relation", "sub_dimension": None},
    ]
    answers = {1: "No", 2: "Yes", 3: "Yes", 4: "Yes"}
    result = hal.score_amber(items, answers)
    values = {(m["split"], m["metric"]): m["value"] for m in result["metrics"]}
    # right: 1 and 2 -> acc 2/4.001 = 49.99 -> 50.0; "No" answers: item 1 only (correct) -> P 100 (1/1.001 = 99.9);
    # truth "no": items 1, 3, 4 -> R 1/3.001 = 33.3; F1 = 2 * 0.999 * 0.333 / (0.999 + 0.333 + 1e-4) = 49.9
    assert values[("discriminative-all", "acc")] == 50.0
    assert result["official"]["discriminative"]["all"]["precision"] == 99.9
    assert result["official"]["discriminative"]["all"]["recall"] == 33.3
    assert values[("discriminative-all", "f1")] == 49.9
    assert "discriminative-generative" not in {m["split"] for m in result["metrics"]}


def test_requests_ask_describe_freely_and_yes_no_by_choice():
    items = hal.build_amber(n_per_split=2, seed=1)
    reqs = hal.amber_requests(items)
    assert reqs[0].text == "Describe this image." and reqs[0].choices is None
    assert all(r.choices == ("Yes", "No") for r in reqs[2:])
    objhal_items = hal.build_objhal(n_per_split=3, seed=0)
    assert [r.id for r in hal.objhal_requests(objhal_items)] == [0, 1, 2]
    assert all(it["image_id"] >= 2**32 for it in objhal_items)
