"""The ShapesWorld oracle: hand-built scenes and answers, with every expected score worked out by hand from the
rules in the module docstring (mmalign_utils/judges/oracle.py), then the judge through make_judge and annotate()."""
from __future__ import annotations

import json

import pytest

from mmalign_utils.annotate import annotate, build_request, load_annotations, load_quarantine
from mmalign_utils.judges.base import JudgeConfigError, JudgeError, JudgeRequest
from mmalign_utils.judges.factory import make_judge
from mmalign_utils.judges.oracle import ShapesOracleJudge, rate_answers, register_oracle_task
from mmalign_utils.world.charts import Chart, Series
from mmalign_utils.world.scenes import Scene, SceneObject

# A large red circle top left, a small blue square in the center, a large yellow star bottom right.
SCENE = Scene(objects=(SceneObject("circle", "red", "large", 0, 0), SceneObject("square", "blue", "small", 1, 1),
                       SceneObject("star", "yellow", "large", 2, 2)), seed=1)
BARS = Chart(kind="bar", title="Votes for each candidate", entity="candidate", seed=2,
             series=(Series("Ana", "red", (7,)), Series("Ben", "blue", (3,)), Series("Chloe", "green", (5,))))


def fields(visual, family: str, subtype: str, short: str = "", label=None, accepted=(), query=None) -> dict:
    extra = {"subtype": subtype, "accepted": list(accepted)}
    if query is not None:
        extra["query"] = query
    return {"family": family, "scene_json": json.dumps(visual.to_dict()), "short_answer": short, "label": label,
            "qa_extra": extra}


def scores(question: str, answers: list[str], item: dict) -> list[dict]:
    return [r.scores for r in rate_answers(question, answers, item)]


def as_dict(h, c, coh, cx, v) -> dict:
    return {"helpfulness": h, "correctness": c, "coherence": coh, "complexity": cx, "verbosity": v}


DESCRIBE = fields(SCENE, "describe", "describe")
PERFECT = ("The image shows three shapes on a white background. A large red circle sits in the top left corner. "
           "A small blue square is placed in the center. A large yellow star sits in the bottom right corner.")


def test_perfect_detailed_description_scores_high():
    # 38 words, 4 sentences: every object stated with colour, size and position, the count "three shapes" right.
    # helpfulness/correctness: coverage full (4), no errors -> 4. coherence: one repeated 3-gram of 36 -> 4.
    # complexity: 1 (mean sentence 9.5 words < 10, no connective, 1 long word of 38). verbosity: 38/38 -> 2.
    assert scores("Describe this image in detail.", [PERFECT], DESCRIBE) == [as_dict(4, 4, 4, 1, 2)]


def test_one_hallucinated_object_lowers_correctness():
    # + 11 words naming a green triangle that is not there: 1 error -> correctness and helpfulness 4 - 1 = 3;
    # 49/38 = 1.29 -> verbosity 2.
    answer = PERFECT + " There is also a green triangle in the top right corner."
    assert scores("Describe this image in detail.", [answer], DESCRIBE) == [as_dict(3, 3, 4, 1, 2)]


def test_one_word_or_phrase_to_a_describe_request_is_not_helpful():
    # "Shapes.": no object claimed -> coverage level 1 -> correctness 1, helpfulness 1; 1 word -> complexity 0,
    # verbosity 1/38 -> 0. "A red circle.": true but covers 1 of 3 objects -> correctness 2; under 5 words ->
    # helpfulness capped at 1.
    got = scores("Describe this image in detail.", ["Shapes.", "A red circle."], DESCRIBE)
    assert got == [as_dict(1, 1, 4, 0, 0), as_dict(1, 2, 4, 0, 0)]


def test_describing_other_things_is_made_up():
    # 14 words, none about the scene; unfamiliar: happy, cat, sitting, wooden, table, window = 6/14 = 0.43 -> the
    # description is of other things: correctness 0, helpfulness 0; coherence 4 - 1 (0.43 > 0.3) = 3; complexity
    # 1 + 1 (one 14-word sentence) = 2; verbosity 14/38 = 0.37 -> 1.
    answer = "The picture shows a happy cat sitting on a wooden table near the window."
    assert scores("Describe this image in detail.", [answer], DESCRIBE) == [as_dict(0, 0, 3, 2, 1)]


def test_garbage_scores_low_coherence():
    # 10 identical words, no full stop: repeated 3-grams 7/8 > 0.5 -> -3, truncated (8+ words) -> -1: coherence 0.
    repeated = "circle circle circle circle circle circle circle circle circle circle"
    # junk tokens ##$, 42%, %%% = 3/8 > 0.2 -> -2; unfamiliar words 5/6 > 0.6 -> -3: coherence 0.
    junk = "zxq blorf ##$ wuggle fnord plim 42% %%%"
    got = scores("Describe this image in detail.", [repeated, junk], DESCRIBE)
    assert [g["coherence"] for g in got] == [0, 0]
    assert [g["complexity"] for g in got] == [0, 0]  # capped at coherence


def test_yes_no_verdicts():
    item = fields(SCENE, "existence", "pope", short="no", label="no", query={"color": "green", "shape": "triangle"})
    answers = ["No, there is no green triangle. There is a large red circle in the top left corner.", "Yes.", "No."]
    # 1: right verdict, 17 words with true claims -> helpfulness 4, correctness 4, verbosity 17/12 = 1.4 -> 2;
    #    complexity 1 (mean sentence 8.5 words). 2: wrong verdict, nothing true -> 0, 0. 3: right but bare -> 3, 4.
    got = scores("Is there a green triangle in the image?", answers, item)
    assert got == [as_dict(4, 4, 4, 1, 2), as_dict(0, 0, 4, 0, 0), as_dict(3, 4, 4, 0, 0)]


def test_short_answer_counts():
    item = fields(SCENE, "count", "count_shape", short="1", accepted=["1", "one"])
    answers = ["There is one star in the bottom right corner.", "There are two stars."]
    got = scores("How many stars are there?", answers, item)
    # 1: "one" in the first sentence, 9 words, the star's count and position true -> 4, 4; 9/10 -> verbosity 2.
    assert got[0] == as_dict(4, 4, 4, 1, 2)
    # 2: core wrong; the star itself exists (a true mention) -> correctness 1, helpfulness 0.
    assert (got[1]["helpfulness"], got[1]["correctness"]) == (0, 1)


def test_lrv_instruction_about_an_absent_object():
    item = fields(SCENE, "existence", "lrv", short="There is no purple triangle.", label="no",
                  query={"color": "purple", "shape": "triangle"})
    answers = ["There is no purple triangle in the image. I can see a large red circle in the top left corner.",
               "The purple triangle is small and sits in the middle."]
    got = scores("Describe the purple triangle in the image.", answers, item)
    # 1: denies the premise and says what is there -> helpfulness 4, correctness 4.
    # 2: goes along with the false premise, nothing true -> helpfulness 0, correctness 0.
    assert [(g["helpfulness"], g["correctness"]) for g in got] == [(4, 4), (0, 0)]


def test_chart_description_and_question():
    describe = fields(BARS, "describe", "chart_describe")
    answers = ["This is a bar chart with three bars: red, blue and green. The red bar is the tallest and the blue "
               "bar is the shortest.", "This is a line chart with a purple line going up."]
    got = scores('Consider the bar chart "Votes for each candidate". Describe this chart in detail.', answers, describe)
    # 1: kind, count, tallest, shortest all stated and true -> coverage full -> 4, 4.
    # 2: wrong kind + a purple series that does not exist = 2 errors, coverage 0 -> max(0, 1 - 2) = 0.
    assert [(g["helpfulness"], g["correctness"]) for g in got] == [(4, 4), (0, 0)]
    tallest = fields(BARS, "chart", "bar_tallest_color", short="red", accepted=["red"])
    got = scores("Which color is the tallest bar?", ["The red bar is the tallest.", "Blue."], tallest)
    assert [(g["helpfulness"], g["correctness"]) for g in got] == [(4, 4), (0, 0)]


# --- the judge -------------------------------------------------------------------------------------------------

def items_for_annotation() -> list[dict]:
    count = fields(SCENE, "count", "count_shape", short="1", accepted=["1", "one"])
    pope = fields(SCENE, "existence", "pope", short="no", label="no", query={"color": "green", "shape": "triangle"})
    return [
        {"item_id": "describe", "image": None, "question": "Describe this image in detail.",
         "answers": [PERFECT, "Shapes."], **DESCRIBE},
        {"item_id": "count", "image": None, "question": "How many stars are there?",
         "answers": ["There is one star in the bottom right corner.", "There are two stars."], **count},
        {"item_id": "pope", "image": None, "question": "Is there a green triangle in the image?",
         "answers": ["Yes.", "No."], **pope},
    ]


def test_make_judge_and_annotate_end_to_end(tmp_path):
    judge = make_judge("oracle")
    assert isinstance(judge, ShapesOracleJudge) and judge.judge_id.startswith("oracle:")
    items = items_for_annotation()
    summary = annotate(items, judge, tmp_path, k=2, progress=False)
    assert summary["this_run"]["annotated"] == 3 and summary["this_run"]["quarantined"] == 0
    rows = {row["item_id"]: row for row in load_annotations(tmp_path)}
    assert rows["describe"]["scores"][0] == as_dict(4, 4, 4, 1, 2)
    assert rows["describe"]["scores"][1] == as_dict(1, 1, 4, 0, 0)
    assert [s["helpfulness"] for s in rows["count"]["scores"]] == [4, 0]
    assert [s["correctness"] for s in rows["pope"]["scores"]] == [0, 4]
    assert "Answer 1:" in rows["pope"]["reasoning"] and "verdict" in rows["pope"]["reasoning"]
    assert all(row["judge_id"] == judge.judge_id for row in rows.values())


def test_item_without_scene_is_quarantined_with_a_reason(tmp_path):
    items = [{"item_id": "bare", "image": None, "question": "What is this?", "answers": ["A cat.", "A dog."]}]
    annotate(items, make_judge("oracle"), tmp_path, k=2, progress=False)
    quarantined = load_quarantine(tmp_path)
    assert [q["item_id"] for q in quarantined] == ["bare"] and "scene" in quarantined[0]["reason"]


def test_noise_spec_wraps_in_noisy_judge_and_is_reproducible():
    judge = make_judge("oracle:noise=1.5,seed=7")
    assert judge.judge_id == f"noisy(sd=1.5,seed=7):{ShapesOracleJudge.judge_id}"
    exact = make_judge("oracle")
    item = items_for_annotation()[0]
    texts = []
    for j in (judge, make_judge("oracle:noise=1.5,seed=7"), exact):
        texts.append(json.loads(j.complete(build_request(item, k=2)).text)["ratings"])
    assert texts[0] == texts[1]  # same seed, same request: same noisy scores
    assert texts[0] != texts[2]  # seeded, so fixed; had all ten scores stayed put the chance was about 3e-4
    with pytest.raises(JudgeConfigError):
        make_judge("oracle:noise=lots")
    with pytest.raises(JudgeConfigError):
        make_judge("oracle:temperature=1")


def test_registered_task_and_unknown_task():
    register_oracle_task("count_answers", lambda payload: {"n": len(payload["answers"])})
    judge = make_judge("oracle")
    request = JudgeRequest.from_prompt("ignored", payload={"task": "count_answers", "answers": ["a", "b", "c"]})
    assert json.loads(judge.complete(request).text) == {"n": 3}
    with pytest.raises(JudgeError, match="no task"):
        judge.complete(JudgeRequest.from_prompt("x", payload={"task": "nope"}))
    with pytest.raises(JudgeError, match="payload"):
        judge.complete(JudgeRequest.from_prompt("x"))


def test_positions_are_matched_whole_not_inside_a_longer_phrase():
    from mmalign_utils.judges.oracle import positions_in

    assert positions_in("It is at the top center.") == ["top center"]
    assert positions_in("in the center, next to the top left one") == ["center", "top left"]


def test_where_answer_top_center_is_wrong_for_an_object_in_the_center():
    from mmalign_utils.judges.oracle import OracleItem, short_answer_correct
    from mmalign_utils.world.scenes import Scene, SceneObject

    scene = Scene([SceneObject("square", "red", "large", 1, 1)], seed=0)
    item = OracleItem(question="Where is the square?", visual=scene, family="short_vqa", subtype="where",
                      label=None, accepted=["center"], query={}, demand="short", expected_words=2)
    assert short_answer_correct("In the center.", item)
    assert not short_answer_correct("At the top center.", item)


# --- the lenient rater (miss=P) -----------------------------------------------------------------------------------

def test_a_rater_that_misses_every_error_scores_the_hallucination_as_the_perfect_answer():
    # The green-triangle answer above has 1 error: exact, (3, 3, 4, 1, 2). Overlooked, rules 3 and 4 count 0 caught
    # errors: coverage full -> 4 and 4; coherence, complexity and verbosity do not read errors -> (4, 4, 4, 1, 2).
    answer = PERFECT + " There is also a green triangle in the top right corner."
    got = [r.scores for r in rate_answers("Describe this image in detail.", [answer], DESCRIBE, miss_rate=1.0)]
    assert got == [as_dict(4, 4, 4, 1, 2)]


def test_a_lenient_rater_still_checks_the_core_verdict():
    # "Yes." to an absent object is a wrong verdict (no claim error to overlook): 0, 0 at any miss rate.
    item = fields(SCENE, "existence", "pope", short="no", label="no", query={"color": "green", "shape": "triangle"})
    got = [r.scores for r in rate_answers("Is there a green triangle in the image?", ["Yes."], item, miss_rate=1.0)]
    assert got == [as_dict(0, 0, 4, 0, 0)]


def test_miss_spec_names_the_judge_and_says_what_it_overlooked():
    lenient = make_judge("oracle:miss=1")
    assert lenient.judge_id == "oracle:shapesworld-v2(miss=1,seed=0)"
    assert make_judge("oracle:miss=0").judge_id == make_judge("oracle").judge_id == "oracle:shapesworld-v2"
    item = dict(items_for_annotation()[0], answers=[PERFECT + " There is also a green triangle in the top right "
                                                    "corner.", "Shapes."])
    reply = json.loads(lenient.complete(build_request(item, k=2)).text)
    assert reply["ratings"][0]["correctness"] == 4 and "1 error(s) overlooked" in reply["reasoning"]
    exact = json.loads(make_judge("oracle").complete(build_request(item, k=2)).text)
    assert exact["ratings"][0]["correctness"] == 3 and "overlooked" not in exact["reasoning"]
    for bad in ("oracle:miss=1.5", "oracle:miss=-0.1", "oracle:miss=some"):
        with pytest.raises(JudgeConfigError):
            make_judge(bad)


def test_overlooked_errors_are_a_seeded_share():
    from mmalign_utils.judges.oracle import overlooked_errors

    errors = [f"hallucinated 'object {i}'" for i in range(4000)]
    flags = overlooked_errors(errors, "an answer", "a question", 0.3, seed=0)
    # Binomial(4000, 0.3): sd of the share = sqrt(0.3 * 0.7 / 4000) = 0.0072; 0.27-0.33 is over 4 sd each side.
    assert 0.27 < sum(flags) / len(flags) < 0.33
    assert flags == overlooked_errors(errors, "an answer", "a question", 0.3, seed=0)  # a rerun agrees
    assert flags != overlooked_errors(errors, "an answer", "a question", 0.3, seed=1)
    assert overlooked_errors(errors, "an answer", "a question", 0.0, seed=0) == [False] * 4000
    assert overlooked_errors(errors, "an answer", "a question", 1.0, seed=0) == [True] * 4000


def test_the_toy_profile_annotates_with_the_lenient_oracle_and_the_paper_profile_with_gemini():
    from mmalign_utils.config import get_profile

    assert make_judge(get_profile("toy").annotation_judge).judge_id == "oracle:shapesworld-v2(miss=1,seed=0)"
    assert get_profile("paper").annotation_judge == "gemini"


# Rule 8: answer-format demands (world.answer_format). Each expected score is rules 1-7 worked out by hand, then
# rule 8: 1 less helpfulness when the demand is not honoured; a bare right word earns 4 when one was asked for.
def with_format(item: dict, kind: str, **spec) -> dict:
    return {**item, "qa_extra": {**item["qa_extra"], "answer_format": {"kind": kind, **spec}}}


def test_a_bare_right_answer_earns_full_helpfulness_when_a_word_was_asked_for():
    pope = fields(SCENE, "existence", "pope", short="no", label="no", query={"color": "green", "shape": "triangle"})
    question = "Is there a green triangle in the image?\nAnswer the question using a single word or phrase."
    answers = ["No.", "No, there is no green triangle. There is a large red circle in the top left corner."]
    got = scores(question, answers, with_format(pope, "word"))
    # 1: right verdict, bare, and bare was asked -> helpfulness 4 (3 without the demand, test_yes_no_verdicts);
    #    correctness 4, coherence 4, complexity 0 (1 word), verbosity 1/12 -> 0.
    # 2: the 4-helpfulness answer of test_yes_no_verdicts, but two sentences of 17 words: not a word or phrase
    #    -> 4 - 1 = 3; the other four attributes as there (4, 4, 1, 2).
    assert got == [as_dict(4, 4, 4, 0, 0), as_dict(3, 4, 4, 1, 2)]


def test_a_one_sentence_demand_on_a_count_question():
    count = fields(SCENE, "count", "count_shape", short="1", accepted=["1", "one"])
    question = "How many stars are there?\nAnswer in one sentence."
    answers = ["There is one star in the bottom right corner.",
               "There is one star. It is large and yellow."]
    got = scores(question, answers, with_format(count, "sentence"))
    # 1: as in test_short_answer_counts (4, 4, 4, 1, 2), one sentence of 9 words: honoured, nothing changes.
    # 2: core right ("one" in the first sentence), 9 words, true claims -> 4 before rule 8; two sentences -> 3.
    #    correctness 4; coherence 4; complexity 1 (mean sentence 4.5 words); verbosity 9/10 -> 2.
    assert got == [as_dict(4, 4, 4, 1, 2), as_dict(3, 4, 4, 1, 2)]


def test_a_detail_demand_on_a_description_counts_sentences():
    question = "Describe this image in detail.\nAnswer in detail, in at least 3 sentences."
    short_full = ("A large red circle is in the top left corner, a small blue square is in the center and a large "
                  "yellow star is in the bottom right corner.")
    got = scores(question, [PERFECT, short_full], with_format(DESCRIBE, "detail", min_sentences=3))
    # 1: PERFECT has 4 sentences: honoured, scores as in test_perfect_detailed_description_scores_high.
    # 2: one 30-word sentence covering all three objects: coverage full -> correctness 4, helpfulness 4 - 1 = 3
    #    (one sentence, 3 asked). coherence 4 (no 3-gram repeats: "is in the" twice of 28 = 0.07 <= 0.12);
    #    complexity 1 + 1 (one 30-word sentence >= 10) + 0 (no connective) + long words (7+ letters: "center",
    #    "bottom" are 6; none of 30 -> 0) = 2; verbosity 30/38 = 0.79 -> 2.
    assert got == [as_dict(4, 4, 4, 1, 2), as_dict(3, 4, 4, 2, 2)]


def test_a_wrong_answer_cannot_go_below_zero_for_a_missed_demand():
    pope = fields(SCENE, "existence", "pope", short="no", label="no", query={"color": "green", "shape": "triangle"})
    question = "Is there a green triangle in the image?\nAnswer in one sentence."
    # wrong verdict -> helpfulness 0, and "Yes." is one sentence of 1 word (not 3+): not honoured, still 0.
    got = scores(question, ["Yes."], with_format(pope, "sentence"))
    assert got == [as_dict(0, 0, 4, 0, 0)]


def test_the_option_letter_alone_honours_the_letter_demand():
    from mmalign_utils.world.answer_format import honours

    letter = {"kind": "letter"}
    assert [honours(a, letter) for a in ("B", "B.", "(B)", " b ", "B. A red circle.", "The answer is B.")] == \
        [True, True, True, True, False, False]
