"""The oracle judge of the open-ended editions: reviews of hand-written answers (scores by hand from the rules in
oracle_review.py), its plumbing through the official LLaVA-Bench / MM-Vet / MMHal scorers, and LLM-judge use."""
from __future__ import annotations

import pytest

from mmalign_utils.bench.shapes import open_ended, oracle_review
from mmalign_utils.bench.shapes.oracle_review import (
    PayloadAttachingJudge, find_phrases, llavabench_review, llavabench_score, mmhal_rating, mmhal_review,
    mmvet_review, mmvet_score, review_answer,
)
from mmalign_utils.judges import JudgeRequest, ScriptedJudge
from mmalign_utils.judges.base import JudgeError
from mmalign_utils.judges.oracle import item_fields, oracle_tasks
from mmalign_utils.world.qa import QAItem
from mmalign_utils.world.scenes import Scene, SceneObject

SCENE = Scene(objects=(SceneObject("circle", "red", "large", 0, 0), SceneObject("square", "blue", "small", 1, 1),
                       SceneObject("star", "yellow", "large", 2, 2)), seed=5)


def _item(family: str, question: str, short: str, extra: dict, label: str | None = None,
          detailed: str = "") -> dict:
    qa = QAItem(id="t", family=family, question=question, short_answer=short, detailed_answer=detailed,
                scene=SCENE.to_dict(), kind="shapes", label=label, extra=extra)
    return {**item_fields(qa), "reference": detailed}


COLOR = _item("short_vqa", "What color is the star?", "yellow",
              {"subtype": "color", "accepted": ["yellow"], "ref": {"shape": "star"}}, detailed="The star is yellow.")
EXISTS = _item("existence", "Is there a green triangle in the image?", "no",
               {"subtype": "pope", "query": {"color": "green", "shape": "triangle"}, "accepted": []}, label="no")
DESCRIBE = _item("describe", "Describe this image in detail.", SCENE.summary(), {"subtype": "describe", "accepted": []})
COUNT = _item("count", "How many circles are there?", "1",
              {"subtype": "count_shape", "filters": {"shape": "circle"}, "accepted": ["1", "one"]})
COUNT_ZERO = _item("count", "How many triangles are there?", "0",
                   {"subtype": "count_shape", "filters": {"shape": "triangle"}, "accepted": ["0", "zero"]})
ABSENT = _item("existence", "Describe the green triangle in the image.", "There is no green triangle.",
               {"subtype": "lrv", "query": {"color": "green", "shape": "triangle"}, "accepted": []}, label="no")
WHERE = _item("short_vqa", "Where is the square?", "center",
              {"subtype": "where", "accepted": ["center", "in the center", "center"]})


def _scores(item: dict, answer: str) -> tuple[int, float, int]:
    review = review_answer("q", answer, item)
    return llavabench_score(review), mmvet_score(review), mmhal_rating(review)


@pytest.mark.parametrize("item, answer, expected", [
    # right and complete: 2 + 8 = 10; 1.0; 3 + 3 = 6
    (COLOR, "The star is yellow.", (10, 1.0, 6)),
    # a rival colour and not the right one: 1 error, nothing covered: max(1, 2 - 3) = 1; 0.0; min(0, 2) = 0
    (COLOR, "It is blue.", (1, 0.0, 0)),
    # true but not what was asked: 2 + 0 = 2; 0.0; 3 + 0 = 3 (not informative, no hallucination)
    (COLOR, "The star is in the bottom right corner.", (2, 0.0, 3)),
    (EXISTS, "No, there is no green triangle.", (10, 1.0, 6)),
    # wrong verdict + hallucinated green triangle: 2 errors -> 1; 0.0; 0
    (EXISTS, "Yes, there is a green triangle.", (1, 0.0, 0)),
    # covers 1 of 3 objects, one hallucination: 2 + round(8/3) - 3 = 2; round(1/3 * 0.5, 1) = 0.2; min(1, 2) = 1
    (DESCRIBE, "There is a large red circle in the top left corner and a purple star.", (2, 0.2, 1)),
    (DESCRIBE, "A large red circle, a small blue square and a large yellow star.", (10, 1.0, 6)),
    # covers 2 of 3, no error: 2 + round(16/3) = 7; round(2/3, 1) = 0.7; 3 + 2 = 5
    (DESCRIBE, "I can see a red circle and a blue square.", (7, 0.7, 5)),
    # says two (rival) and grounding finds a wrong number: 2 errors -> 1; 0.0; 0
    (COUNT, "There are two circles.", (1, 0.0, 0)),
    (COUNT, "One.", (10, 1.0, 6)),
    # a count of 0 said as a denial
    (COUNT_ZERO, "There are no triangles in the image.", (10, 1.0, 6)),
    # "one triangle": hallucinated triangle and a wrong number claim, 2 errors
    (COUNT_ZERO, "There is one triangle.", (1, 0.0, 0)),
    (ABSENT, "There is no green triangle in this image.", (10, 1.0, 6)),
    # accepts the false premise and hallucinates the triangle: 2 errors
    (ABSENT, "The green triangle is large and sits in the center.", (1, 0.0, 0)),
    # "top center" is another cell (not "center" inside it), and the square's position is wrong: 2 errors
    (WHERE, "The square is at the top center.", (1, 0.0, 0)),
    (WHERE, "In the center.", (10, 1.0, 6)),
    # an empty answer
    (COLOR, "", (1, 0.0, 0)),
])
def test_review_scores_of_hand_written_answers(item, answer, expected):
    assert _scores(item, answer) == expected


def test_replies_are_what_the_official_parsers_read():
    reply = llavabench_review("What color is the star?", "It is blue.", COLOR)
    assert reply.split("\n")[0] == "10 1"  # reference "The star is yellow." first, then the candidate
    assert mmvet_review("What color is the star?", "It is yellow.", COLOR) == "1.0"
    reply = mmhal_review("What color is the star?", "It is blue.", COLOR)
    assert reply.endswith("Rating: 0") and reply.lower().count("rating:") == 1


def test_find_phrases_prefers_the_longest_match():
    assert find_phrases("It is at the top center.", ["center", "top center"]) == {"top center"}
    assert find_phrases("In the top-left corner", ["top left", "left"]) == {"top left"}
    assert find_phrases("a circle", ["circles"]) == set()


def test_tasks_are_registered_with_the_oracle():
    assert {"shapes_llavabench", "shapes_mmvet", "shapes_mmhal"} <= set(oracle_tasks())


def test_references_score_full_marks_through_the_official_scorers():
    items = open_ended.build_llavabench(n_per_split=2, seed=0)
    result = open_ended.score_llavabench(items, {it["id"]: it["reference"] for it in items})
    assert result["official"]["relative"]["all"] == 100.0
    assert all(rec["tuple"] == [10.0, 10.0] for rec in result["official"]["records"])
    assert result["judge"].startswith("oracle:")
    items = open_ended.build_mmhal(n_per_split=1, seed=0)
    result = open_ended.score_mmhal(items, {it["id"]: it["reference"] for it in items})
    assert result["official"]["average"] == 6.0 and result["official"]["hallucination_rate"] == 0.0
    assert [it["category"] for it in items] == ["attribute", "adversarial", "comparison", "counting", "relation",
                                                "environment", "holistic", "other"]
    items = open_ended.build_mmvet(n_per_split=1, seed=0)
    result = open_ended.score_mmvet(items, {it["id"]: it["oracle_item"]["reference"] for it in items})
    assert result["official"]["total"] == 100.0


def test_wrong_answers_score_low_through_the_official_scorers():
    items = open_ended.build_mmhal(n_per_split=1, seed=0)
    # an answer about a purple hexagon is a hallucination whatever the question
    result = open_ended.score_mmhal(items, {it["id"]: "There is a purple hexagon." for it in items})
    assert result["official"]["hallucination_rate"] == 1.0
    assert result["official"]["average"] <= 2.0


def test_the_attaching_judge_refuses_requests_it_was_not_told_about():
    judge = PayloadAttachingJudge()
    with pytest.raises(JudgeError, match="no oracle payload"):
        judge.complete(JudgeRequest.from_prompt("What is 2 + 2?"))
    request = JudgeRequest.from_prompt("anything", payload={"task": "shapes_mmvet", "question": "What color is the "
                                                            "star?", "answer": "yellow", "item": COLOR})
    assert judge.complete(request).text == "1.0"  # a payload on the request is used as it is


def test_an_llm_judge_gets_the_official_requests_with_our_prompts():
    items = open_ended.build_mmvet(n_per_split=1, seed=0)
    judge = ScriptedJudge(["0.5"] * len(items))
    result = open_ended.score_mmvet(items, {it["id"]: "An answer." for it in items}, judge=judge)
    assert result["official"]["total"] == 50.0 and result["judge"] == "scripted:test"
    first = judge.requests[0].messages[-1]["content"]
    assert first.startswith(open_ended.MMVET_GRADER_PROMPT) and first.endswith(" | An answer. | ")
    assert not judge.requests[0].payload  # prose only: the LLM reads the prompt


def test_review_rules_are_written_in_the_module():
    assert "RULES (version 1)" in oracle_review.__doc__
    assert "informativeness" in oracle_review.__doc__
