"""The grounding checker on hand-written sentences; every expected value was worked out by hand from SCENE."""
from __future__ import annotations

import pytest

from mmalign_utils.world.grounding import extract_mentions, ground, is_scene_talk
from mmalign_utils.world.scenes import Scene, SceneObject

# Objects are stored in reading order, so the indices are:
#   0 = large red circle, top left        1 = small yellow star, top right
#   2 = small blue square, center         3 = large blue circle, bottom right
SCENE = Scene(objects=(SceneObject("circle", "red", "large", 0, 0), SceneObject("square", "blue", "small", 1, 1),
                       SceneObject("circle", "blue", "large", 2, 2), SceneObject("star", "yellow", "small", 0, 2)),
              seed=0)


def texts(mentions) -> list[str]:
    return [m.text for m in mentions]


def test_scene_indices_are_as_documented():
    assert [(o.color, o.shape) for o in SCENE.objects] == [("red", "circle"), ("yellow", "star"), ("blue", "square"),
                                                          ("blue", "circle")]


def test_mention_fields_and_span():
    text = "Here, a large red circle sits in the top left corner."
    (m,) = extract_mentions(text)
    assert (m.shape, m.color, m.size, m.row, m.col, m.number, m.plural, m.negated) == \
        ("circle", "red", "large", 0, 0, None, False, False)
    assert m.span == (6, 24) and text[m.span[0]:m.span[1]] == "a large red circle"


def test_correct_description_covers_its_object():
    r = ground("A large red circle sits in the top left corner.", SCENE)
    assert texts(r.correct) == ["A large red circle"]
    assert r.hallucinated == [] and r.wrong_attributes == [] and r.n_errors == 0
    assert r.objects_covered == [0] and r.objects_missed == [1, 2, 3]
    assert r.coverage == pytest.approx(0.25)


@pytest.mark.parametrize("text, expected", [
    ("There is a green triangle.", ["a green triangle"]),  # shape absent
    ("There is a green circle.", ["a green circle"]),  # circles exist, but no green one
    ("There is a pink hexagon and a purple diamond.", ["a pink hexagon", "a purple diamond"]),  # not in the world
    ("I can see a red box.", ["a red box"]),  # box = square; the only square is blue
    ("There is a red square.", ["a red square"]),
])
def test_hallucinations(text, expected):
    r = ground(text, SCENE)
    assert texts(r.hallucinated) == expected and r.correct == []
    assert r.hallucination_rate == 1.0


def test_wrong_size_is_an_attribute_error_not_a_hallucination():
    r = ground("There is a small red circle.", SCENE)
    assert r.hallucinated == [] and r.correct == []
    (w,) = r.wrong_attributes
    assert (w.attribute, w.claimed, w.actual) == ("size", "small", ["large"])
    assert r.objects_covered == [0]  # it is still about the red circle


def test_wrong_position():
    r = ground("The blue square is in the top left corner.", SCENE)
    (w,) = r.wrong_attributes
    assert (w.attribute, w.claimed, w.actual) == ("position", "top left", ["center"])
    r = ground("The circle in the bottom right corner is red.", SCENE)  # the red circle is top left
    (w,) = r.wrong_attributes
    assert (w.attribute, w.claimed, w.actual) == ("position", "bottom right", ["top left"])


@pytest.mark.parametrize("text, where", [
    ("In the center, there is a small blue square.", (1, 1)),
    ("A small blue square is located in the middle of the image.", (1, 1)),
    ("The yellow star is at the top.", (0, None)),
    ("On the right side we can see a large blue circle.", (None, 2)),
    ("The top-right star is yellow.", (0, 2)),
])
def test_positions_in_several_wordings(text, where):
    r = ground(text, SCENE)
    (m,) = r.mentions
    assert (m.row, m.col) == where
    assert r.n_errors == 0 and len(r.correct) == 1


def test_predicate_colour_after_position():
    r = ground("The circle in the bottom right corner is blue.", SCENE)
    (m,) = r.correct
    assert (m.color, m.row, m.col) == ("blue", 2, 2) and r.objects_covered == [3]


def test_relations_are_not_positions_and_not_negations():
    r = ground("The blue square is to the left of the blue circle.", SCENE)
    assert len(r.correct) == 2 and all(m.row is None and m.col is None for m in r.mentions)
    r = ground("The star is not to the left of the square.", SCENE)
    assert r.negated == [] and len(r.correct) == 2


def test_number_claims():
    r = ground("There are two circles and three squares.", SCENE)
    claims = {c.mention.text: (c.claimed, c.actual, c.correct) for c in r.number_claims}
    assert claims == {"two circles": (2, 2, True), "three squares": (3, 1, False)}
    assert r.n_errors == 1 and r.hallucinated == []
    assert [(c.claimed, c.actual) for c in ground("The image contains 4 objects.", SCENE).number_claims] == [(4, 4)]
    assert [(c.claimed, c.actual) for c in ground("There are two blue shapes.", SCENE).number_claims] == [(2, 2)]
    assert [(c.claimed, c.actual) for c in ground("I count three balls.", SCENE).number_claims] == [(3, 2)]
    # a count scoped by a position: the top row holds the red circle and the yellow star
    assert [(c.claimed, c.actual) for c in ground("The top row contains two objects.", SCENE).number_claims] == [(2, 2)]


@pytest.mark.parametrize("text, negated, false_negations", [
    ("There is no star.", ["star"], ["star"]),  # denied but present
    ("There is no triangle.", ["triangle"], []),
    ("There are no triangles, hexagons or green squares.", ["triangles", "hexagons", "green squares"], []),
    ("The green star is not present in the image.", ["The green star"], []),
    ("There are zero triangles.", ["zero triangles"], []),
    ("No circles and squares appear here.", ["circles", "squares"], ["circles", "squares"]),
])
def test_negations(text, negated, false_negations):
    r = ground(text, SCENE)
    assert texts(r.negated) == negated
    assert texts(r.false_negations) == false_negations
    assert r.asserted == [] and r.hallucinated == []


def test_negation_stops_at_the_clause():
    r = ground("I don't see any stars or triangles, but there is a red circle.", SCENE)
    assert texts(r.negated) == ["any stars", "triangles"] and texts(r.false_negations) == ["any stars"]
    assert texts(r.correct) == ["a red circle"]
    r = ground("There are no triangles and two stars.", SCENE)  # "two stars" is claimed, not denied
    assert texts(r.negated) == ["triangles"]
    assert [(c.claimed, c.actual) for c in r.number_claims] == [(2, 1)]


def test_comparisons_and_questions_are_not_claims():
    r = ground("There are more circles than triangles.", SCENE)
    assert r.hallucinated == [] and r.asserted == []
    assert ground("Is there a green star in the image?", SCENE).hallucinated == []


def test_colour_groups_and_synonyms():
    r = ground("Red and blue circles are visible.", SCENE)
    assert sorted(m.color for m in r.correct) == ["blue", "red"] and r.objects_covered == [0, 3]
    r = ground("There is a blue box and a red ball.", SCENE)
    assert [(m.shape, m.color) for m in r.correct] == [("square", "blue"), ("circle", "red")]


def test_coverage_counts_objects_not_words():
    assert ground("There is a circle.", SCENE).objects_covered in ([0], [3])  # one circle, either one
    assert ground("There are circles.", SCENE).objects_covered == [0, 3]
    r = ground("A red circle, a blue circle and a blue square.", SCENE)
    assert r.objects_covered == [0, 2, 3] and r.objects_missed == [1]


@pytest.mark.parametrize("text", [
    "The ocean is a blue and purple circle.",
    "Simply place the star in the top right corner.",
    "Draw a red triangle next to a green square.",
    "The answer is a large yellow star.",
    "In the picture, a red ball sits next to a blue box.",
])
def test_scene_talk(text):
    assert is_scene_talk(text)


@pytest.mark.parametrize("text", [
    "Red wine pairs well with steak.",
    "Visit Red Square in Moscow.",
    "The square root of two is irrational.",
    "She became a rock star in the nineties.",
    "Click the button in the top right corner.",
    "A circle has no corners; a square has four.",
    "The sky is blue because of Rayleigh scattering.",
    "Our hotel has a five-star rating.",
    "An orange is a citrus fruit.",
    "He threw a red ball to the dog.",
    "",
])
def test_not_scene_talk(text):
    assert not is_scene_talk(text)


def test_a_full_correct_description():
    text = ("The image features a red circle at the top left, a small blue square in the middle, a blue circle at "
            "the bottom right, and a small yellow star at the top right. The star is yellow and small.")
    r = ground(text, SCENE)
    assert r.n_errors == 0 and r.hallucinated == [] and len(r.correct) == 5
    assert r.objects_covered == [0, 1, 2, 3] and r.objects_missed == []
    assert [(m.row, m.col) for m in r.mentions[:4]] == [(0, 0), (1, 1), (2, 2), (0, 2)]


def test_a_description_with_mistakes():
    r = ground("The image shows a red circle, a green triangle and two blue squares.", SCENE)
    assert texts(r.correct) == ["a red circle", "two blue squares"]
    assert texts(r.hallucinated) == ["a green triangle"]
    assert [(c.claimed, c.actual, c.correct) for c in r.number_claims] == [(2, 1, False)]
    assert r.n_errors == 2 and r.hallucination_rate == pytest.approx(1 / 3)


@pytest.mark.parametrize("text, n_correct, numbers", [
    ("Two of the shapes are circles.", 1, []),  # "two of the shapes" is not a count of all shapes
    ("Only one star appears.", 1, [(1, 1)]),
    ("There is not only a circle but also a star.", 2, []),  # "not only" denies nothing
    ("There is a large blue circle. It is located in the top left corner.", 1, []),  # "it" is not resolved
])
def test_cautious_readings(text, n_correct, numbers):
    r = ground(text, SCENE)
    assert len(r.correct) == n_correct and r.negated == [] and r.n_errors == 0
    assert [(c.claimed, c.actual) for c in r.number_claims] == numbers


def test_square_as_a_grid_cell_is_not_a_square():
    r = ground("The yellow star is in the top right square of the grid.", SCENE)
    assert [(m.shape, m.row, m.col) for m in r.mentions] == [("star", 0, 2)] and r.n_errors == 0
