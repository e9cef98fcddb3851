"""MM-Vet scorer against the hand-computed fixture of benchmarks.md §13, with a scripted judge and a synthetic
grader prompt (not MM-Vet's text)."""
import json

import pytest

from mmalign_utils.bench import mmvet
from mmalign_utils.bench.common import BenchmarkDataError
from mmalign_utils.judges.base import ScriptedJudge

MMVET_JSON = {
    "v1_0": {"imagename": "v1_0.png", "capability": ["rec"], "question": "What animal is this?", "answer": "cat"},
    "v1_1": {"imagename": "v1_1.png", "capability": ["ocr", "math"], "question": "What is x in the equation?",
             "answer": "-1<AND>-5"},
    "v1_2": {"imagename": "v1_2.png", "capability": ["rec", "know", "gen"], "question": "Who painted this?",
             "answer": "Monet<OR>Claude Monet"},
    "v1_3": {"imagename": "v1_3.png", "capability": ["ocr", "spat"], "question": "What is on the left sign?",
             "answer": "STOP"},
}
PREDICTIONS = {"v1_0": "a dog", "v1_1": "x = -1", "v1_2": "Van Gogh", "v1_3": "STOP"}
SYNTHETIC_GRADER_PROMPT = ("Grade the prediction from 0.0 to 1.0.\n\n"
                           "Question | Ground truth | Prediction | Correctness\n")
EVALUATOR_SCRIPT = (
    'raise SystemExit("this script must be parsed, not run")\n'
    f"prompt = {SYNTHETIC_GRADER_PROMPT!r}\n"
    "def main():\n    pass\n"
)


def write_data_dir(root):
    (root / "mm-vet" / "images").mkdir(parents=True)
    (root / "mm-vet" / "mm-vet.json").write_text(json.dumps(MMVET_JSON))
    (root / "mm-vet" / "mm-vet_evaluator.py").write_text(EVALUATOR_SCRIPT)
    return root


@pytest.fixture
def items(tmp_path):
    return mmvet.load(write_data_dir(tmp_path))


def test_load_uniform_items(items, tmp_path):
    by_id = {it["id"]: it for it in items}
    assert by_id["v1_1"]["capabilities"] == ["ocr", "math"] and by_id["v1_1"]["category"] == "math_ocr"
    assert by_id["v1_1"]["reference"] == "-1<AND>-5"
    assert by_id["v1_2"]["image"] == str(tmp_path / "mm-vet" / "images" / "v1_2.png")


def test_grader_prompt_is_parsed_from_the_script_not_run(tmp_path):
    write_data_dir(tmp_path)
    assert mmvet.load_grader_prompt(tmp_path, verify_hash=False) == SYNTHETIC_GRADER_PROMPT
    with pytest.raises(BenchmarkDataError, match="not the known version"):
        mmvet.load_grader_prompt(tmp_path, verify_hash=True)


def test_fixture_scores(items):
    # Judge replies in call order: v1_0 "0.5"; v1_1 "1.0"; v1_2 five unparsable replies -> 0.0; v1_3 "0.7 extra"
    # (only the first token counts) -> 0.7.
    judge = ScriptedJudge(["0.5", "1.0"] + ["garbage"] * 5 + ["0.7 extra"])
    result = mmvet.score(items, PREDICTIONS, judge=judge, grader_prompt=SYNTHETIC_GRADER_PROMPT)
    # total = (0.5 + 1.0 + 0.0 + 0.7) / 4 * 100 = 55.0
    assert result["total"] == 55.0 and result["score"] == 55.0
    # rec: v1_0 and v1_2 -> (0.5 + 0) / 2 = 25.0; ocr: (1.0 + 0.7) / 2 = 85.0; math 100.0 (v1_1 alone);
    # know and gen 0.0 (v1_2 alone); spat 70.0 (v1_3 alone).
    assert result["per_capability"] == {"rec": 25.0, "ocr": 85.0, "math": 100.0, "know": 0.0, "gen": 0.0,
                                         "spat": 70.0}
    # Each capability set occurs once, so each combination equals its single question.
    assert result["per_combination"] == {"rec": 50.0, "math_ocr": 100.0, "gen_know_rec": 0.0, "ocr_spat": 70.0}
    assert result["n"] == 4 and result["n_parse_failures"] == 1 and len(judge.requests) == 8
    failed = [r for r in result["records"] if r["failed"]]
    assert [r["id"] for r in failed] == ["v1_2"] and failed[0]["replies"] == ["garbage"] * 5


def test_request_text_and_reask_loop(items):
    judge = ScriptedJudge(["0.5", "1.0"] + ["garbage"] * 5 + ["0.7 extra"])
    mmvet.score(items, PREDICTIONS, judge=judge, grader_prompt=SYNTHETIC_GRADER_PROMPT)
    first, second = judge.requests[0], judge.requests[1]
    assert [m["role"] for m in first.messages] == ["user"]
    assert first.max_tokens == 3 and first.temperature == 0.0
    assert first.messages[0]["content"] == SYNTHETIC_GRADER_PROMPT + "\nWhat animal is this? | cat | a dog | "
    # Spaces are put around <AND> / <OR>, and the open row ends with " | ".
    assert second.messages[0]["content"].endswith("\nWhat is x in the equation? | -1 <AND> -5 | x = -1 | ")
    retries = judge.requests[2:7]
    assert retries[0].messages[0]["content"].endswith(
        "Who painted this? | Monet <OR> Claude Monet | Van Gogh | ")
    # First try plain at T 0; re-asks carry the digit suffix at T 0, 0.5, 1.0, 1.5.
    assert not retries[0].messages[0]["content"].endswith("(digit): ")
    assert all(r.messages[0]["content"].endswith("\nPredict the correctness of the answer (digit): ")
               for r in retries[1:])
    assert [r.temperature for r in retries] == [0.0, 0.0, 0.5, 1.0, 1.5]


@pytest.mark.parametrize("reply, expected", [
    ("0.5", 0.5), ("1.0\n", 1.0), ("0.7 extra", 0.7), ("0", 0.0),
    ("1.2", None), ("-0.1", None), (" 0.5", None), ("nan", None), ("score", None),
])
def test_parse_score(reply, expected):
    assert mmvet.parse_score(reply) == expected


def test_a_later_try_that_parses_is_kept(items):
    judge = ScriptedJudge(["oops", "0.3"])
    value, replies = mmvet.grade_one(judge, SYNTHETIC_GRADER_PROMPT, items[0], "a dog")
    assert value == 0.3 and replies == ["oops", "0.3"]


def test_repeated_runs_mean_and_std(items):
    # Run 0 grades all 1.0 (total 100), run 1 all 0.0 (total 0): mean 50.0, population std 50.0.
    judge = ScriptedJudge(lambda r: "1.0" if r.repeat == 0 else "0.0")
    result = mmvet.score(items, PREDICTIONS, judge=judge, grader_prompt=SYNTHETIC_GRADER_PROMPT, n_runs=2)
    assert result["runs"] == [100.0, 0.0] and result["total"] == 50.0 and result["std"] == 50.0
    assert result["per_capability"]["ocr"] == 50.0


def test_answer_formats_round_trip(tmp_path):
    two = {"v1_0": "a cat", "v1_7": "x = 3"}
    mmvet.write_answers(tmp_path / "submission.json", two)
    assert json.loads((tmp_path / "submission.json").read_text()) == two
    assert mmvet.read_answers(tmp_path / "submission.json") == two
    mmvet.write_answers(tmp_path / "llava.jsonl", two, model_id="toy")
    lines = [json.loads(line) for line in (tmp_path / "llava.jsonl").read_text().splitlines()]
    assert [line["question_id"] for line in lines] == [0, 7]  # LLaVA question_id n is MM-Vet "v1_n"
    assert set(lines[0]) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert mmvet.read_answers(tmp_path / "llava.jsonl") == two


def test_model_prompts_are_the_bare_question(items):
    prompts = mmvet.build_model_prompts(items)
    assert prompts[0]["text"] == "What animal is this?"
    assert prompts[0]["llava_prompt"] == "<image>\nWhat animal is this?"
    assert prompts[0]["temperature"] == 0.0 and prompts[0]["do_sample"] is False


def test_score_file(tmp_path):
    write_data_dir(tmp_path)
    mmvet.write_answers(tmp_path / "answers.json", PREDICTIONS)
    result = mmvet.score_file(tmp_path / "answers.json", tmp_path, judge=ScriptedJudge(lambda r: "1.0"),
                              verify_hash=False)
    assert result["total"] == 100.0
