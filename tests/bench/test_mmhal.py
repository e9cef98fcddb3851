"""MMHal-Bench scorer: hand-computed fixture of benchmarks.md §13 (16 records, 2 per type in position % 8 order,
two topics) with a scripted judge and a synthetic grader template (not the LLaVA-RLHF text)."""
import json

import pytest

from mmalign_utils.bench import mmhal
from mmalign_utils.bench.common import BenchmarkDataError
from mmalign_utils.judges.base import ScriptedJudge

TYPES = ["attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic", "other"]
RECORDS = [
    {"question_type": TYPES[i % 8], "question_topic": "animal" if i < 8 else "food", "image_id": f"img{i}",
     "image_src": f"https://example.org/photos/img{i}_o.jpg", "image_content": ["Dog", "Grass"] if i == 0 else ["X"],
     "question": f"Question {i}?", "gt_answer": f"Answer {i}.", "model_answer": ""}
    for i in range(16)
]
SYNTHETIC_TEMPLATE = "CONTENTS: {}\nQ: {}\nGT: {}\nRESPONSE: {}\n"
SCRIPT = 'raise SystemExit("parse me, do not run me")\n' f"template = {SYNTHETIC_TEMPLATE!r}\n"

# position -> judge reply; the parsed score in the comment.
REPLIES = [
    "Explanation. Rating: 6, very informative",  # 6
    "rating: 2",  # 2
    "Rating: 3",  # 3
    "Rating: 5 ... on reflection Rating: 1",  # two different ratings -> 0 (failure)
    "I cannot decide.",  # none -> 0 (failure)
    "Rating: 4",  # 4
    "RATING: 5",  # 5 (case-insensitive)
    "Rating: 1",  # 1
    "Rating: 6",  # 6
    "Rating: 0",  # 0
    "Rating: 4",  # 4
    "Rating: 3",  # 3
    "Rating: 2",  # 2
    "Rating: 5",  # 5
    "Rating: 6, I repeat, rating: 6",  # the same rating twice is one distinct rating -> 6
    "Rating: 4",  # 4
]
ANSWERS = {i: f"Model answer {i}." for i in range(16)}


def write_data_dir(root):
    (root / "mmhal").mkdir(parents=True)
    (root / "mmhal" / "response_template.json").write_text(json.dumps(RECORDS, indent=2))
    (root / "mmhal" / "eval_gpt_mmhal.py").write_text(SCRIPT)
    return root


@pytest.fixture
def items(tmp_path):
    return mmhal.load(write_data_dir(tmp_path), verify_hash=False)


def judge_by_position():
    return ScriptedJudge(lambda request: REPLIES[int(request.tag.split(":")[1])])


def test_load(items, tmp_path):
    assert len(items) == 16 and items[9]["category"] == "adversarial" and items[9]["topic"] == "food"
    assert items[0]["image"] == str(tmp_path / "mmhal" / "images" / "img0_o.jpg")
    assert items[0]["image_content"] == ["Dog", "Grass"] and items[0]["reference"] == "Answer 0."


def test_template_from_script_and_hash_check(tmp_path):
    write_data_dir(tmp_path)
    assert mmhal.load_grader_template(tmp_path, verify_hash=False) == SYNTHETIC_TEMPLATE
    with pytest.raises(BenchmarkDataError, match="not the known version"):
        mmhal.load_grader_template(tmp_path)
    with pytest.raises(BenchmarkDataError, match="not a known version"):
        mmhal.load(tmp_path)  # the synthetic template records are not the official file


def test_fixture_scores(items):
    judge = judge_by_position()
    result = mmhal.score(items, ANSWERS, judge=judge, grader_template=SYNTHETIC_TEMPLATE)
    # Scores: 6 2 3 0 0 4 5 1 | 6 0 4 3 2 5 6 4 -> sum 21 + 30 = 51; average 51/16 = 3.1875.
    assert result["average"] == pytest.approx(3.1875) and result["score"] == pytest.approx(3.1875)
    # Below 3: positions 1 (2), 3 (0), 4 (0), 7 (1), 9 (0), 12 (2) -> 6/16 = 0.375.
    assert result["hallucination_rate"] == pytest.approx(0.375)
    # Type = position % 8: (6+6)/2, (2+0)/2, (3+4)/2, (0+3)/2, (0+2)/2, (4+5)/2, (5+6)/2, (1+4)/2.
    assert result["per_type"] == pytest.approx({"attribute": 6.0, "adversarial": 1.0, "comparison": 3.5,
                                                "counting": 1.5, "relation": 1.0, "environment": 4.5,
                                                "holistic": 5.5, "other": 2.5})
    # Topics: animal = positions 0-7 -> 21/8; food = positions 8-15 -> 30/8.
    assert result["per_topic"] == pytest.approx({"animal": 21 / 8, "food": 30 / 8})
    # Informativeness terms (s-3 if s>=3 else s): 3 2 0 0 0 1 2 1 | 3 0 1 0 2 2 3 1 -> 21/16 = 1.3125 -> /3*100.
    assert result["informativeness"] == pytest.approx(43.75)
    assert result["n"] == 16 and result["n_parse_failures"] == 2
    assert [r["id"] for r in result["records"] if r["failed"]] == [3, 4]


def test_request_is_the_formatted_template(items):
    judge = judge_by_position()
    mmhal.score(items, ANSWERS, judge=judge, grader_template=SYNTHETIC_TEMPLATE)
    first = judge.requests[0]
    assert first.messages == [{"role": "user", "content":
                               "CONTENTS: Dog, Grass\nQ: Question 0?\nGT: Answer 0.\nRESPONSE: Model answer 0.\n"}]
    assert first.temperature == 0.0


@pytest.mark.parametrize("reply, expected", [
    ("Rating: 4", 4), ("rating: 0", 0), ("RaTiNg: 6.", 6), ("Rating: 5 and Rating: 1", None), ("Rating 4", None),
    ("rating: 3 ... rating: 3", 3),
])
def test_parse_rating(reply, expected):
    assert mmhal.parse_rating(reply) == expected


def test_repeated_runs(items):
    judge = ScriptedJudge(lambda r: "Rating: 6" if r.repeat == 0 else "Rating: 2")
    result = mmhal.score(items, ANSWERS, judge=judge, grader_template=SYNTHETIC_TEMPLATE, n_runs=2)
    assert result["runs"] == [6.0, 2.0] and result["mean"] == 4.0 and result["std"] == 2.0
    assert result["hallucination_rate"] == pytest.approx(0.5)  # run 0: 0.0, run 1: 1.0


def test_answer_file_round_trip(tmp_path, items):
    two = {0: "A dog on grass.", 1: "No."}
    mmhal.write_answers(tmp_path / "responses.json", two, items[:2])
    written = json.loads((tmp_path / "responses.json").read_text())
    assert written[0]["model_answer"] == "A dog on grass." and written[1]["question"] == "Question 1?"
    assert set(written[0]) == set(RECORDS[0])  # the template's fields are kept
    assert mmhal.read_answers(tmp_path / "responses.json") == two


def test_score_file(tmp_path, items):
    # The `items` fixture already wrote the data directory under tmp_path.
    mmhal.write_answers(tmp_path / "responses.json", ANSWERS, items)
    result = mmhal.score_file(tmp_path / "responses.json", tmp_path, judge=judge_by_position(), verify_hash=False)
    assert result["average"] == pytest.approx(3.1875)
