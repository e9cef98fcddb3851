"""LLaVA-Bench (In-the-Wild) scorer: hand-computed fixture of benchmarks.md §13 in both failure modes, with a
scripted judge and a synthetic rule file (not LLaVA's rule text)."""
import json
import math

import pytest

from mmalign_utils.bench import llavabench
from mmalign_utils.bench.common import BenchmarkDataError
from mmalign_utils.judges.base import ScriptedJudge

QUESTIONS = [
    {"question_id": 0, "image": "001.jpg", "text": "What is the dog doing?", "category": "conv"},
    {"question_id": 1, "image": "001.jpg", "text": "What colour is the grass?", "category": "conv"},
    {"question_id": 2, "image": "002.jpg", "text": "Describe the image.", "category": "detail"},
    {"question_id": 3, "image": "002.jpg", "text": "Describe it in detail.", "category": "detail"},
    {"question_id": 4, "image": "001.jpg", "text": "Why is the dog happy?", "category": "complex"},
    {"question_id": 5, "image": "002.jpg", "text": "What might the cat do next?", "category": "complex"},
]
CONTEXT = [
    {"id": "001", "image": "001.jpg", "caption": ["A dog runs.", "On grass."]},  # list caption
    {"id": "002", "image": "002.jpg", "caption": "A cat."},  # string caption, as the released file has
]
GPT4 = [{"question_id": q["question_id"], "text": f"REF{q['question_id']}", "answer_id": "x", "model_id": "gpt-4"}
        for q in QUESTIONS]
RULES = {f"llava_bench_{c}": {"role": "Assistant", "prompt": f"RULE-{c.upper()}"}
         for c in ("conv", "detail", "complex")}
CANDIDATES = {q["question_id"]: f"CAND{q['question_id']}" for q in QUESTIONS}

# question id -> judge reply (first try)
REPLIES = {0: "8 6\nAssistant 1 is better.", 1: "9,7\nFine.", 2: "7 7", 3: "I think 8 and 6",
           4: "10 5\nmeh", 5: "6 9\nbetter"}


def write_data_dir(root):
    folder = root / "llava-bench-in-the-wild"
    folder.mkdir(parents=True)
    for name, rows in (("questions.jsonl", QUESTIONS), ("context.jsonl", CONTEXT), ("answers_gpt4.jsonl", GPT4)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "rule.json").write_text(json.dumps(RULES))
    return root


def qid_of(request):
    return int(request.tag.split(":")[1])


@pytest.fixture
def items(tmp_path):
    return llavabench.load(write_data_dir(tmp_path))


def test_load_joins_captions_and_references(items, tmp_path):
    by_id = {it["id"]: it for it in items}
    assert by_id[0]["caption"] == ["A dog runs.", "On grass."] and by_id[2]["caption"] == "A cat."
    assert by_id[3]["reference"] == "REF3" and by_id[3]["category"] == "detail"
    assert by_id[3]["image"] == str(tmp_path / "llava-bench-in-the-wild" / "images" / "002.jpg")


def test_rules_must_be_known(tmp_path):
    write_data_dir(tmp_path)
    assert llavabench.load_rules(tmp_path, verify_hash=False) == RULES
    with pytest.raises(BenchmarkDataError, match="differ from LLaVA"):
        llavabench.load_rules(tmp_path, verify_hash=True)


def test_llava_mode_keeps_failures_in_the_means(items):
    judge = ScriptedJudge(lambda r: REPLIES[qid_of(r)])
    result = llavabench.score(items, CANDIDATES, judge=judge, rules=RULES)
    # Pairs (reference, candidate): q0 (8,6) q1 (9,7) | q2 (7,7) q3 (-1,-1) | q4 (10,5) q5 (6,9).
    # conv: 6.5 / 8.5 = 76.47 -> 76.5; detail: 3.0 / 3.0 -> 100.0; complex: 7.0 / 8.0 -> 87.5;
    # all: reference (8+9+7-1+10+6)/6 = 6.5, candidate (6+7+7-1+5+9)/6 = 5.5 -> 84.615 -> 84.6.
    assert result["relative"] == {"all": 84.6, "complex": 87.5, "conv": 76.5, "detail": 100.0}
    assert result["ref_mean"]["all"] == 6.5 and result["cand_mean"]["all"] == 5.5
    assert result["score"] == 84.6 and result["n_parse_failures"] == 1 and result["n_excluded"] == 0
    assert len(judge.requests) == 6  # no retries in the LLaVA protocol


def test_recommended_mode_retries_then_excludes(items):
    judge = ScriptedJudge(lambda r: REPLIES[qid_of(r)])  # question 3 fails on every try
    result = llavabench.score(items, CANDIDATES, judge=judge, rules=RULES, protocol="recommended", max_retries=2)
    # detail keeps only q2: 7/7 -> 100.0; all: reference (8+9+7+10+6)/5 = 8.0, candidate (6+7+7+5+9)/5 = 6.8 -> 85.0.
    assert result["relative"] == {"all": 85.0, "complex": 87.5, "conv": 76.5, "detail": 100.0}
    assert result["n_excluded"] == 1 and result["n_parse_failures"] == 1
    retried = [r for r in judge.requests if qid_of(r) == 3]
    assert [r.repeat for r in retried] == [0, 1000, 2000]  # distinct repeats so retries do not hit the cache


def test_recommended_mode_keeps_a_successful_retry(items):
    def reply(request):
        if qid_of(request) == 3 and request.repeat > 0:
            return "5 4\nsecond try"
        return REPLIES[qid_of(request)]

    result = llavabench.score(items, CANDIDATES, judge=ScriptedJudge(reply), rules=RULES, protocol="recommended")
    # detail: reference (7+5)/2 = 6.0, candidate (7+4)/2 = 5.5 -> 91.67 -> 91.7;
    # all: reference 45/6 = 7.5, candidate 38/6 = 6.3333 -> rounded 6.333 -> 6.333/7.5 = 84.44 -> 84.4.
    assert result["relative"]["detail"] == 91.7 and result["relative"]["all"] == 84.4
    assert result["n_excluded"] == 0 and result["n_parse_failures"] == 0


def test_review_message_layout(items):
    judge = ScriptedJudge(lambda r: REPLIES[qid_of(r)])
    llavabench.score(items, CANDIDATES, judge=judge, rules=RULES)
    first = judge.requests[0]
    assert first.temperature == 0.2 and first.max_tokens == 1024
    assert first.messages[0] == {"role": "system", "content": llavabench.JUDGE_SYSTEM_MESSAGE}
    assert first.messages[1]["content"] == (
        "[Context]\nA dog runs.\nOn grass.\n\n[Question]\nWhat is the dog doing?\n\n"
        "[Assistant 1]\nREF0\n\n[End of Assistant 1]\n\n[Assistant 2]\nCAND0\n\n[End of Assistant 2]\n\n"
        "[System]\nRULE-CONV\n\n")


def test_string_caption_context_in_each_protocol():
    # LLaVA's "\n".join on a string puts each character on its own line; the recommended protocol keeps it whole.
    assert llavabench.context_text("A cat.", "llava") == "A\n \nc\na\nt\n."
    assert llavabench.context_text("A cat.", "recommended") == "A cat."
    assert llavabench.context_text(["One.", "Two."], "recommended") == "One.\nTwo."


@pytest.mark.parametrize("review, expected", [
    ("8 6\nmore", (8.0, 6.0)), ("9,7\nmore", (9.0, 7.0)), ("7 7", (7.0, 7.0)), ("8, 6", (-1.0, -1.0)),
    ("I think 8 and 6", (-1.0, -1.0)), ("8.5 9.5", (8.5, 9.5)), ("", (-1.0, -1.0)), ("a b", (-1.0, -1.0)),
])
def test_parse_score_pair(review, expected):
    # "8, 6" becomes "8  6" -> three tokens -> failure, as in LLaVA.
    assert llavabench.parse_score_pair(review) == expected


def test_repeated_runs(items):
    judge = ScriptedJudge(lambda r: "8 4" if r.repeat == 0 else "8 8")
    result = llavabench.score(items, CANDIDATES, judge=judge, rules=RULES, n_runs=2)
    assert result["runs"] == [50.0, 100.0] and result["mean"] == 75.0 and result["std"] == 25.0
    assert result["relative"]["conv"] == 75.0


def test_answer_file_round_trip(tmp_path):
    two = {0: "A dog.", 5: "It will jump."}
    llavabench.write_answers(tmp_path / "answers.jsonl", two, model_id="toy", prompts={0: "What is it?"})
    lines = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert lines[0]["prompt"] == "What is it?" and lines[1]["model_id"] == "toy"
    assert llavabench.read_answers(tmp_path / "answers.jsonl") == two


def test_score_file(tmp_path):
    write_data_dir(tmp_path)
    llavabench.write_answers(tmp_path / "a.jsonl", CANDIDATES)
    result = llavabench.score_file(tmp_path / "a.jsonl", tmp_path, judge=ScriptedJudge(lambda r: "5 5"),
                                   verify_hash=False)
    assert result["relative"]["all"] == 100.0 and not math.isnan(result["score"])
