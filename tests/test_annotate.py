"""The annotation engine with scripted judges: reply parsing and validation, the prompt, retries of invalid
replies, quarantine, resume, rate limiting, concurrency, the ledger and the noise wrapper."""
from __future__ import annotations

import json
import threading
import time

import pytest
from PIL import Image

from mmalign_utils.annotate import (ATTRIBUTES, InvalidReply, NoisyJudge, annotate, annotation_schema,
                                    build_request, load_annotations, load_quarantine, parse_reply)
from mmalign_utils.annotate.ledger import cost_usd, model_of, price_for
from mmalign_utils.judges.base import JudgeConfigError, JudgeError, ScriptedJudge, TransientJudgeError


def rating(answer: int, h=3, c=3, co=3, cx=1, v=2) -> dict:
    return {"answer": answer, "helpfulness": h, "correctness": c, "coherence": co, "complexity": cx, "verbosity": v}


def reply_json(*ratings: dict, reasoning: str = "Answer 1 is right.") -> str:
    return json.dumps({"reasoning": reasoning, "ratings": list(ratings)})


def valid_for(k: int) -> str:
    # answer i gets helpfulness i-1 so that order mistakes show up
    return reply_json(*[rating(i, h=i - 1) for i in range(1, k + 1)])


def make_items(n: int, k: int = 4, image=None) -> list[dict]:
    return [{"item_id": f"item-{i:02d}", "image": image, "question": f"What is in picture item-{i:02d}?",
             "answers": [f"answer {j} to item-{i:02d}" for j in range(1, k + 1)], "scene": {"n": i}}
            for i in range(n)]


# --- parsing and validation (hand-written replies) ------------------------------------------------------------------

def test_parse_plain_json_and_order_by_answer_number():
    text = reply_json(rating(2, h=4), rating(1, h=0), rating(4, h=2), rating(3, h=1), reasoning="why")
    parsed = parse_reply(text, 4)
    assert [s["helpfulness"] for s in parsed.scores] == [0, 4, 1, 2]
    assert set(parsed.scores[0]) == set(ATTRIBUTES)
    assert parsed.reasoning == "why"


def test_parse_json_after_reasoning_text():
    body = json.dumps({"ratings": [rating(1, c=4), rating(2, c=0)]})
    text = f"Step 1: answer 1 names the red circle correctly.\nStep 2: answer 2 invents a dog.\n{body}\nDone."
    parsed = parse_reply(text, 2)
    assert [s["correctness"] for s in parsed.scores] == [4, 0]
    assert parsed.reasoning.startswith("Step 1") and parsed.reasoning.endswith("invents a dog.")


def test_parse_fenced_json_with_braces_in_the_reasoning():
    text = ("I compare {answer 1} with {answer 2}.\n```json\n" + reply_json(rating(1), rating(2), reasoning="")
            + "\n```")
    parsed = parse_reply(text, 2)
    assert len(parsed.scores) == 2
    assert parsed.reasoning == "I compare {answer 1} with {answer 2}."


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("The first answer is best.", "no JSON object"),
    ("[1, 2, 3, 4]", "not an object"),
    (reply_json(rating(1), rating(2), rating(3)), "ratings"),  # 3 answers rated, 4 given
    (reply_json(*[rating(i) for i in range(1, 6)]), "ratings"),  # 5 rated
    (reply_json(rating(1, h=5), rating(2), rating(3), rating(4)), "ratings[0].helpfulness"),  # above 4
    (reply_json(rating(1), rating(2, v=-1), rating(3), rating(4)), "ratings[1].verbosity"),  # below 0
    (reply_json(rating(1), rating(2), rating(3, c=2.5), rating(4)), "ratings[2].correctness"),  # not an integer
    (reply_json(rating(1), rating(2), rating(3), rating(4, co="3")), "ratings[3].coherence"),  # a string
    (reply_json(rating(1, cx=True), rating(2), rating(3), rating(4)), "ratings[0].complexity"),  # a boolean
    (reply_json(rating(1), rating(1), rating(3), rating(4)), "exactly once"),  # answer 2 never rated
    (reply_json(rating(1), rating(2), rating(3), rating(5)), "ratings[3].answer"),  # no answer 5
    (json.dumps({"reasoning": "x", "ratings": [{k: v for k, v in rating(1).items() if k != "verbosity"},
                                               rating(2), rating(3), rating(4)]}), "verbosity"),  # missing field
    (json.dumps({"reasoning": "x", "ratings": [dict(rating(1), honesty=3), rating(2), rating(3), rating(4)]}),
     "honesty"),  # extra field
    (json.dumps({"reasoning": 7, "ratings": [rating(i) for i in range(1, 5)]}), "reasoning"),
    ('{"reasoning": "cut off", "ratings": [{"answer": 1, "helpful', "no JSON object"),  # truncated reply
])
def test_invalid_replies_are_rejected_with_a_reason(text, reason):
    with pytest.raises(InvalidReply) as info:
        parse_reply(text, 4)
    assert reason in str(info.value)


def test_schema_is_fixed_to_k_answers():
    schema = annotation_schema(2)
    assert schema["properties"]["ratings"]["minItems"] == schema["properties"]["ratings"]["maxItems"] == 2
    assert list(schema["properties"]) == ["reasoning", "ratings"]  # reasoning first: written before the scores
    assert parse_reply(valid_for(2), 2).scores[1]["helpfulness"] == 1


# --- the prompt -----------------------------------------------------------------------------------------------------

def test_request_holds_image_question_all_answers_and_schema():
    image = Image.new("RGB", (4, 4), (0, 128, 0))
    item = make_items(1, image=image)[0]
    request = build_request(item, 4, repeat=2)
    prompt = request.messages[-1]["content"]
    positions = [prompt.index(f"answer {j} to item-00") for j in range(1, 5)]
    assert positions == sorted(positions)
    assert prompt.index("What is in picture item-00?") < positions[0]
    for attribute in ATTRIBUTES:
        assert attribute in prompt
    assert "step by step" in prompt
    assert list(request.images) == [image] and request.repeat == 2
    assert request.response_schema == annotation_schema(4)
    assert request.payload["answers"] == item["answers"] and request.payload["item"]["scene"] == {"n": 0}


# --- the runner -----------------------------------------------------------------------------------------------------

def test_annotate_writes_scores_in_answer_order(tmp_path):
    judge = ScriptedJudge(lambda r: valid_for(4))
    summary = annotate(make_items(3), judge, tmp_path, progress=False)
    rows = load_annotations(tmp_path)
    assert [r["item_id"] for r in sorted(rows, key=lambda r: r["item_id"])] == ["item-00", "item-01", "item-02"]
    assert [s["helpfulness"] for s in rows[0]["scores"]] == [0, 1, 2, 3]
    assert rows[0]["judge_id"] == "scripted:test" and rows[0]["raw"] == valid_for(4)
    assert rows[0]["reasoning"] == "Answer 1 is right."
    assert summary["this_run"]["annotated"] == 3 and summary["store"]["annotated"] == 3
    assert json.loads((tmp_path / "summary.json").read_text())["this_run"]["annotated"] == 3
    assert len(judge.requests) == 3  # one request per item with all answers in it


def test_invalid_reply_is_asked_again_with_a_fresh_repeat(tmp_path):
    replies = {0: "not json at all", 1: valid_for(4)}
    judge = ScriptedJudge(lambda r: replies[r.repeat])
    summary = annotate(make_items(1), judge, tmp_path, max_invalid_retries=2, progress=False)
    assert [r.repeat for r in judge.requests] == [0, 1]
    assert summary["this_run"]["invalid_replies"] == 1 and summary["this_run"]["annotated"] == 1
    assert load_quarantine(tmp_path) == []


def test_always_invalid_items_are_quarantined_with_raw_text_and_reason(tmp_path):
    bad = reply_json(rating(1), rating(2), rating(3))  # only 3 of 4 answers rated
    judge = ScriptedJudge(lambda r: bad if "item-01" in r.messages[-1]["content"] else valid_for(4))
    summary = annotate(make_items(3), judge, tmp_path, max_invalid_retries=2, progress=False)
    assert summary["this_run"]["quarantined"] == 1 and summary["this_run"]["annotated"] == 2
    [quarantined] = load_quarantine(tmp_path)
    assert quarantined["item_id"] == "item-01" and quarantined["raw"] == bad
    assert "invalid reply 3 times" in quarantined["reason"] and "ratings" in quarantined["reason"]
    assert [a["repeat"] for a in quarantined["attempts"]] == [0, 1, 2]
    assert sorted(r.repeat for r in judge.requests if "item-01" in r.messages[-1]["content"]) == [0, 1, 2]


def test_rerun_skips_done_items_and_can_retry_quarantined(tmp_path):
    items = make_items(4)
    first = ScriptedJudge(lambda r: "garbage" if "item-03" in r.messages[-1]["content"] else valid_for(4))
    annotate(items, first, tmp_path, max_invalid_retries=0, use_cache=False, progress=False)
    second = ScriptedJudge(lambda r: valid_for(4))
    summary = annotate(items, second, tmp_path, progress=False)
    assert second.requests == [] and summary["skipped_already_done"] == 4
    summary = annotate(items, second, tmp_path, retry_quarantined=True, use_cache=False, progress=False)
    assert len(second.requests) == 1 and summary["this_run"]["annotated"] == 1
    assert len(load_annotations(tmp_path)) == 4 and load_quarantine(tmp_path) == []


def test_rerun_with_other_answers_under_the_same_ids_is_refused(tmp_path):
    items = make_items(3)
    judge = ScriptedJudge(lambda r: valid_for(4))
    annotate(items, judge, tmp_path, use_cache=False, progress=False)
    resampled = make_items(3)
    resampled[1]["answers"] = [f"another answer {j}" for j in range(1, 5)]  # item-01 sampled again
    with pytest.raises(ValueError, match=r"1 of these item ids \(first: \['item-01'\]\)"):
        annotate(resampled, judge, tmp_path, use_cache=False, progress=False)
    assert len(judge.requests) == 3  # nothing asked, nothing overwritten
    assert len(load_annotations(tmp_path)) == 3
    # the same content, and new ids, go through; the changed set goes to another folder
    summary = annotate(items + make_items(4)[3:], judge, tmp_path, use_cache=False, progress=False)
    assert summary["skipped_already_done"] == 3 and summary["this_run"]["annotated"] == 1
    annotate(resampled, judge, tmp_path / "resampled", use_cache=False, progress=False)
    assert len(load_annotations(tmp_path / "resampled")) == 3


def test_judge_cache_answers_a_second_store(tmp_path):
    judge = ScriptedJudge(lambda r: valid_for(4))
    annotate(make_items(2), judge, tmp_path / "a", progress=False)
    from mmalign_utils.judges.cache import SQLiteJudgeCache

    cached_judge = ScriptedJudge(lambda r: valid_for(4), cache=SQLiteJudgeCache(tmp_path / "a" / "judge_cache.sqlite"))
    summary = annotate(make_items(2), cached_judge, tmp_path / "b", progress=False)
    assert cached_judge.requests == [] and summary["this_run"]["cache_hits"] == 2
    assert summary["this_run"]["cost_usd"] == 0


def test_bad_items_are_refused_before_any_call(tmp_path):
    items = make_items(3)
    items[1]["answers"] = items[1]["answers"][:3]
    items[2]["item_id"] = "item-00"
    items[0]["image"] = str(tmp_path / "missing.png")
    judge = ScriptedJudge(lambda r: valid_for(4))
    with pytest.raises(ValueError) as info:
        annotate(items, judge, tmp_path, progress=False)
    message = str(info.value)
    assert "item #1" in message and "exactly k=4 answers, has 3" in message
    assert "item #2" in message and "duplicate" in message and "missing.png does not exist" in message
    assert judge.requests == []


def test_transient_failures_leave_the_item_for_the_next_run(tmp_path):
    def busy(request):
        raise TransientJudgeError("HTTP 503", status=503)

    summary = annotate(make_items(1), ScriptedJudge(busy), tmp_path, max_retries=2, base_delay=0.001,
                       progress=False)
    assert summary["this_run"]["failed"] == 1 and summary["this_run"]["transient_retries"] == 2
    assert "HTTP 503" in summary["this_run"]["failed_items"]["item-00"]
    assert load_quarantine(tmp_path) == [] and load_annotations(tmp_path) == []
    annotate(make_items(1), ScriptedJudge(lambda r: valid_for(4)), tmp_path, progress=False)
    assert len(load_annotations(tmp_path)) == 1


def test_refused_request_is_quarantined_and_config_error_stops_the_run(tmp_path):
    def refuse(request):
        raise JudgeError("HTTP 400: image too large")

    annotate(make_items(1), ScriptedJudge(refuse), tmp_path / "a", progress=False)
    [quarantined] = load_quarantine(tmp_path / "a")
    assert "image too large" in quarantined["reason"]

    def no_key(request):
        raise JudgeConfigError("GEMINI_API_KEY is not set")

    with pytest.raises(JudgeConfigError):
        annotate(make_items(5), ScriptedJudge(no_key), tmp_path / "b", concurrency=2, progress=False)
    assert load_quarantine(tmp_path / "b") == [] and load_annotations(tmp_path / "b") == []


def test_concurrency_is_bounded(tmp_path):
    lock, state = threading.Lock(), {"now": 0, "max": 0}

    def slow(request):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return valid_for(4)

    annotate(make_items(12), ScriptedJudge(slow), tmp_path, concurrency=3, progress=False)
    assert state["max"] == 3


def test_rate_limit_spaces_request_starts(tmp_path):
    starts = []
    judge = ScriptedJudge(lambda r: starts.append(time.monotonic()) or valid_for(4))
    before = time.monotonic()
    annotate(make_items(5), judge, tmp_path, concurrency=5, requests_per_minute=600, progress=False)  # 0.1 s apart
    # slots are before + 0.1 * i; a thread may start late but never before its slot, so the i-th earliest start
    # is at least 0.1 * i after `before` (without the limiter all five would start at once)
    offsets = [start - before for start in sorted(starts)]
    assert len(offsets) == 5 and all(offset >= 0.1 * i - 0.005 for i, offset in enumerate(offsets))


# --- ledger ---------------------------------------------------------------------------------------------------------

def test_cost_by_hand():
    prices = {"gemini-2.5-flash": (0.30, 2.50)}
    # 1000 input tokens at $0.30/M + 200 output tokens at $2.50/M = 0.0003 + 0.0005
    assert cost_usd("gemini-2.5-flash", 1000, 200, prices) == pytest.approx(0.0008)
    assert cost_usd("unknown-model", 1000, 200, prices) is None
    table = {"gpt-4": (30, 60), "gpt-4o": (2.5, 10), "gpt-4o-mini": (0.15, 0.6)}
    assert price_for("gpt-4o-mini-2024-07-18", table) == (0.15, 0.6)
    assert price_for("gpt-4-0613", table) == (30, 60)
    assert model_of("openai:my-model@http://127.0.0.1:8000/v1") == "my-model"
    assert model_of("gemini:gemini-2.5-flash") == "gemini-2.5-flash"


def test_ledger_totals_in_summary(tmp_path):
    from mmalign_utils.judges.base import JudgeReply

    class Priced(ScriptedJudge):
        def _call(self, request):
            return JudgeReply(text=valid_for(4), judge_id=self.judge_id, input_tokens=1000, output_tokens=200)

    judge = Priced([], judge_id="gemini:gemini-2.5-flash")
    summary = annotate(make_items(3), judge, tmp_path, prices={"gemini-2.5-flash": (0.30, 2.50)}, progress=False)
    assert summary["this_run"]["cost_usd"] == pytest.approx(3 * 0.0008)
    totals = summary["ledger_all_runs"]["gemini:gemini-2.5-flash"]
    assert (totals["calls"], totals["input_tokens"], totals["output_tokens"]) == (3, 3000, 600)
    assert totals["cost_usd"] == pytest.approx(0.0024)


# --- noise ----------------------------------------------------------------------------------------------------------

def oracle_reply(request) -> str:
    """An exact 'oracle' that reads the payload and answers JSON directly (no prose)."""
    k = request.payload["k"]
    return json.dumps({"ratings": [rating(i, h=2, c=2, co=2, cx=2, v=2) for i in range(1, k + 1)]})


def test_oracle_returning_json_directly_is_annotated(tmp_path):
    annotate(make_items(2), ScriptedJudge(oracle_reply, judge_id="oracle:test"), tmp_path, progress=False)
    rows = load_annotations(tmp_path)
    assert len(rows) == 2 and rows[0]["scores"][0] == {a: 2 for a in ATTRIBUTES} and rows[0]["reasoning"] == ""


def test_noisy_judge(tmp_path):
    oracle = ScriptedJudge(oracle_reply, judge_id="oracle:test")
    items = make_items(20)
    requests = [build_request(item, 4) for item in items]
    exact = NoisyJudge(oracle, sd=0.0)
    assert all(parse_reply(exact.complete(r).text, 4).scores == [{a: 2 for a in ATTRIBUTES}] * 4 for r in requests)

    def noisy_scores(judge):
        return [s[a] for r in requests for s in parse_reply(judge.complete(r).text, 4).scores for a in ATTRIBUTES]

    first, again = noisy_scores(NoisyJudge(oracle, sd=1.0, seed=1)), noisy_scores(NoisyJudge(oracle, sd=1.0, seed=1))
    other_seed = noisy_scores(NoisyJudge(oracle, sd=1.0, seed=2))
    assert first == again and first != other_seed
    assert set(first) <= {0, 1, 2, 3, 4} and len(set(first)) >= 3
    # round(2 + N(0,1)) stays 2 when |noise| < 0.5: probability 0.383, so about 154 of 400 scores
    assert 100 < sum(s == 2 for s in first) < 210
    only_verbosity = NoisyJudge(oracle, sd=2.0, attributes=["verbosity"])
    scores = [s for r in requests for s in parse_reply(only_verbosity.complete(r).text, 4).scores]
    assert all(s["helpfulness"] == 2 for s in scores) and any(s["verbosity"] != 2 for s in scores)
    assert NoisyJudge(oracle, sd=0.5, seed=3).judge_id == "noisy(sd=0.5,seed=3):oracle:test"
    annotate(items, NoisyJudge(oracle, sd=1.0, seed=1), tmp_path, progress=False)
    assert len(load_annotations(tmp_path)) == 20
