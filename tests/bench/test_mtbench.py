"""MT-Bench scorer against hand-computed fixtures (benchmarks.md §13) with a scripted judge and synthetic prompts.

The judge prompt templates below are made up; they only share FastChat's names and placeholders.
"""
import json
import math

import pytest

from mmalign_utils.bench import mtbench
from mmalign_utils.bench.common import BenchmarkDataError
from mmalign_utils.judges.base import ScriptedJudge

SYNTHETIC_PROMPTS = [
    {"name": "single-v1", "type": "single", "system_prompt": "SYS-GENERAL",
     "prompt_template": "QUESTION: {question}\nANSWER: {answer}\nEnd with [[rating]].", "output_format": "[[rating]]"},
    {"name": "single-math-v1", "type": "single", "system_prompt": "SYS-MATH",
     "prompt_template": "QUESTION: {question}\nREFERENCE: {ref_answer_1}\nANSWER: {answer}",
     "output_format": "[[rating]]"},
    {"name": "single-v1-multi-turn", "type": "single", "system_prompt": "SYS-GENERAL-MT",
     "prompt_template": "Q1: {question_1}\nA1: {answer_1}\nQ2: {question_2}\nA2: {answer_2}\nGrade A2.",
     "output_format": "[[rating]]"},
    {"name": "single-math-v1-multi-turn", "type": "single", "system_prompt": "SYS-MATH-MT",
     "prompt_template": "Q1: {question_1}\nR1: {ref_answer_1}\nA1: {answer_1}\n"
                        "Q2: {question_2}\nR2: {ref_answer_2}\nA2: {answer_2}\nGrade A2.",
     "output_format": "[[rating]]"},
    {"name": "pair-v2", "type": "pairwise", "system_prompt": "unused", "prompt_template": "unused",
     "output_format": "[[A]]"},
]
PROMPTS = {p["name"]: p for p in SYNTHETIC_PROMPTS}

QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Make it rhyme."]},
    {"question_id": 111, "category": "math", "turns": ["What is 2+2?", "And 3+3?"], "reference": ["ignored"]},
    {"question_id": 121, "category": "coding", "turns": ["Write fizzbuzz.", "Now in C."]},
    {"question_id": 131, "category": "extraction", "turns": ["Extract names.", "Now dates."]},
]
REFERENCES = [
    {"question_id": 111, "model_id": "gpt-4", "choices": [{"index": 0, "turns": ["REF-4", "REF-6"]}]},
    {"question_id": 121, "model_id": "gpt-4", "choices": [{"index": 0, "turns": ["REF-FIZZ", "REF-FIZZ-C"]}]},
]
ANSWERS = {81: ["roses are red", "violets are blue"], 111: ["4", "6"], 121: ["print(...)", "printf(...)"],
           131: ["Ann, Bob", "2020"]}

# (question id, turn) -> the judge's reply text.
REPLIES = {
    (81, 1): "[[7]]",
    (81, 2): "Rating: [[8.5]]",
    (111, 1): "I would give it [6].",  # only the backup pattern matches
    (111, 2): "no score",  # unparsable -> -1 -> dropped
    (121, 1): "[[9]]",
    (121, 2): "[[4]]",
    (131, 1): "[[5]]",
    (131, 2): "[[6]]",
}


def write_data_dir(root):
    (root / "mt_bench" / "reference_answer").mkdir(parents=True)
    (root / "mt_bench" / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (root / "mt_bench" / "reference_answer" / "gpt-4.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in REFERENCES))
    (root / "mt_bench" / "judge_prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in SYNTHETIC_PROMPTS))
    return root


def reply_for(request):
    # The question id is in the request tag "mt_bench:<id>:turn<k>".
    _, qid, turn = request.tag.split(":")
    return REPLIES[(int(qid), int(turn[-1]))]


@pytest.fixture
def items(tmp_path):
    return mtbench.load(write_data_dir(tmp_path), verify_hash=False)


def test_load_attaches_references_only_where_the_judge_uses_them(items):
    by_id = {it["id"]: it for it in items}
    assert by_id[111]["reference"] == ["REF-4", "REF-6"]
    assert by_id[121]["reference"] == ["REF-FIZZ", "REF-FIZZ-C"]
    assert by_id[81]["reference"] is None and by_id[131]["reference"] is None
    assert by_id[81]["turns"] == ["Write a poem.", "Make it rhyme."]


def test_load_refuses_unknown_file_versions(tmp_path):
    write_data_dir(tmp_path)
    with pytest.raises(BenchmarkDataError, match="not a known version"):
        mtbench.load(tmp_path, verify_hash=True)
    with pytest.raises(BenchmarkDataError, match="differ from FastChat"):
        mtbench.load_judge_prompts(tmp_path, verify_hash=True)


def test_scores_match_hand_computation(items):
    judge = ScriptedJudge(reply_for)
    result = mtbench.score(items, ANSWERS, judge=judge, judge_prompts=PROMPTS)
    # Valid turn-1 scores: 7, 6, 9, 5 -> 27/4 = 6.75.
    assert result["turn1"] == pytest.approx(6.75)
    # Valid turn-2 scores: 8.5, 4, 6 (question 111's "no score" is dropped) -> 18.5/3.
    assert result["turn2"] == pytest.approx(18.5 / 3)
    # Overall = mean of the 7 remaining scores = 45.5/7 = 6.5.
    assert result["overall"] == pytest.approx(6.5)
    assert result["score"] == pytest.approx(6.5)
    assert result["per_category"] == pytest.approx({"writing": 7.75, "math": 6.0, "coding": 6.5, "extraction": 5.5})
    assert result["n"] == 4 and result["n_judgments"] == 8 and result["n_parse_failures"] == 1
    assert result["judge"] == "scripted:test" and result["protocol"] == "fastchat"
    assert len(result["records"]) == 8 and {r["judgment"] for r in result["records"]} == set(REPLIES.values())


def test_requests_follow_fastchat(items):
    judge = ScriptedJudge(reply_for)
    mtbench.score(items, ANSWERS, judge=judge, judge_prompts=PROMPTS)
    by_tag = {r.tag: r for r in judge.requests}
    for request in judge.requests:
        assert request.temperature == 0.0 and request.max_tokens == 2048
        assert [m["role"] for m in request.messages] == ["system", "user"]
    # Turn 1: references only for math and coding, with the math prompt's system message.
    assert by_tag["mt_bench:111:turn1"].messages[0]["content"] == "SYS-MATH"
    assert "REFERENCE: REF-4" in by_tag["mt_bench:111:turn1"].messages[1]["content"]
    assert "REFERENCE: REF-FIZZ\n" in by_tag["mt_bench:121:turn1"].messages[1]["content"]
    for general in ("mt_bench:81:turn1", "mt_bench:131:turn1", "mt_bench:81:turn2", "mt_bench:131:turn2"):
        assert "REF" not in by_tag[general].messages[1]["content"]
    assert by_tag["mt_bench:81:turn1"].messages[1]["content"] == (
        "QUESTION: Write a poem.\nANSWER: roses are red\nEnd with [[rating]].")
    # Turn 2 shows both turns (and both reference turns for math/coding).
    assert by_tag["mt_bench:81:turn2"].messages[1]["content"] == (
        "Q1: Write a poem.\nA1: roses are red\nQ2: Make it rhyme.\nA2: violets are blue\nGrade A2.")
    assert by_tag["mt_bench:111:turn2"].messages[1]["content"] == (
        "Q1: What is 2+2?\nR1: REF-4\nA1: 4\nQ2: And 3+3?\nR2: REF-6\nA2: 6\nGrade A2.")
    assert by_tag["mt_bench:111:turn2"].messages[0]["content"] == "SYS-MATH-MT"


@pytest.mark.parametrize("text, expected", [
    ("[[7]]", 7), ("Rating: [[8.5]]", 8.5), ("I would give it [6].", 6), ("[[10]] then [3]", 10),
    ("[2] before [[9]]", 9),  # the double-bracket pattern is searched first, anywhere in the text
    ("no score", -1), ("[[eight]]", -1),
])
def test_parse_rating(text, expected):
    assert mtbench.parse_rating(text) == expected


def test_generation_settings_per_category(items):
    prompts = {p["id"]: p for p in mtbench.build_model_prompts(items)}
    assert prompts[81]["temperature"] == 0.7 and prompts[81]["do_sample"] is True
    for qid in (111, 121, 131):
        assert prompts[qid]["temperature"] == 0.0 and prompts[qid]["do_sample"] is False
    assert all(p["max_new_tokens"] == 1024 and p["conv_template"] == "vicuna_v1" for p in prompts.values())
    assert prompts[81]["turns"] == ["Write a poem.", "Make it rhyme."] and prompts[81]["images"] == [None, None]
    assert mtbench.generation_temperature("stem") == 0.1 and mtbench.generation_temperature("humanities") == 0.1
    assert mtbench.generation_temperature("roleplay") == 0.7 and mtbench.generation_temperature("unknown") == 0.7


def test_noisy_image_protocol_prefixes_every_turn(items):
    images = ["a.jpg", "b.jpg", "c.jpg"]
    first = mtbench.build_model_prompts(items, "fastchat_noisy_image", noise_images=images, seed=3)
    again = mtbench.build_model_prompts(items, "fastchat_noisy_image", noise_images=images, seed=3)
    assert first == again  # seeded
    assert first[0]["turns"] == ["<image>\nWrite a poem.", "<image>\nMake it rhyme."]
    assert all(img in images for p in first for img in p["images"]) and len(first[0]["images"]) == 2
    with pytest.raises(ValueError, match="noise_images"):
        mtbench.build_model_prompts(items, "fastchat_noisy_image")


def test_repeated_runs_report_mean_and_std(items):
    # Run 0 gives every turn 6, run 1 every turn 8: overall per run 6 and 8 -> mean 7, population std 1.
    judge = ScriptedJudge(lambda r: "[[6]]" if r.repeat == 0 else "[[8]]")
    result = mtbench.score(items, ANSWERS, judge=judge, judge_prompts=PROMPTS, n_runs=2)
    assert result["runs"] == [6, 8]
    assert result["mean"] == pytest.approx(7.0) and result["std"] == pytest.approx(1.0)
    assert result["score"] == pytest.approx(7.0) and len(judge.requests) == 16


def test_missing_answers_are_refused_unless_allowed(items):
    partial = {k: v for k, v in ANSWERS.items() if k != 131}
    with pytest.raises(ValueError, match="131"):
        mtbench.score(items, partial, judge=ScriptedJudge(reply_for), judge_prompts=PROMPTS)
    result = mtbench.score(items, partial, judge=ScriptedJudge(reply_for), judge_prompts=PROMPTS, allow_missing=True)
    assert result["n"] == 3 and result["n_missing"] == 1
    # Without question 131: turn1 (7+6+9)/3, turn2 (8.5+4)/2, overall 34.5/5.
    assert result["overall"] == pytest.approx(6.9)


def test_answer_file_round_trip(tmp_path):
    path = tmp_path / "model_answer" / "toy.jsonl"
    two = {81: ["a1", "a2"], 111: ["b1", "b2"]}
    mtbench.write_answers(path, two, model_id="toy")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert {line["model_id"] for line in lines} == {"toy"}
    assert lines[0]["choices"] == [{"index": 0, "turns": ["a1", "a2"]}] and "answer_id" in lines[0]
    assert mtbench.read_answers(path) == two


def test_score_file_end_to_end(tmp_path):
    write_data_dir(tmp_path)
    mtbench.write_answers(tmp_path / "answers.jsonl", ANSWERS)
    result = mtbench.score_file(tmp_path / "answers.jsonl", tmp_path, judge=ScriptedJudge(reply_for),
                                verify_hash=False)
    assert result["overall"] == pytest.approx(6.5) and not math.isnan(result["turn2"])
