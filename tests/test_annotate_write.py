"""Judge-written answers (paper §3.5's SFT variant): one request per prompt, cached, failures named."""
from dataclasses import replace

import pytest
from PIL import Image

from mmalign_utils.annotate.write import WRITER_SYSTEM, write_answers
from mmalign_utils.judges.base import JudgeConfigError, JudgeError, ScriptedJudge
from mmalign_utils.judges.retry import RetryPolicy


def _items():
    return [{"item_id": "p1", "question": "What colour is the star?", "image": Image.new("RGB", (8, 8), "red")},
            {"item_id": "p2", "question": "How many circles are there?", "image": Image.new("RGB", (8, 8), "blue")}]


def test_each_prompt_gets_the_judges_answer_and_a_rerun_pays_for_nothing(tmp_path):
    judge = ScriptedJudge(lambda r: f"answer to: {r.messages[-1]['content']}")
    answers = write_answers(_items(), judge, tmp_path, concurrency=2, progress=False)
    assert answers == {"p1": "answer to: Question: What colour is the star?",
                       "p2": "answer to: Question: How many circles are there?"}
    assert len(judge.requests) == 2 and judge.cache is None  # its own cache was attached for the call only
    for request in judge.requests:
        assert request.messages[0] == {"role": "system", "content": WRITER_SYSTEM}
        assert len(request.images) == 1 and request.payload["task"] == "write_answer"

    def must_not_be_called(request):
        raise AssertionError("a cached answer was asked for again")

    again = write_answers(_items(), ScriptedJudge(must_not_be_called), tmp_path, progress=False)
    assert again == answers


def test_an_empty_reply_is_asked_again_then_fails_naming_the_item_and_keeps_the_written_ones(tmp_path):
    judge = ScriptedJudge(lambda r: "   " if r.payload["item_id"] == "p2" else "A red star.")
    with pytest.raises(JudgeError, match=r"1 of 2 answers were not written \(p2: empty reply 2 times\)"):
        write_answers(_items(), judge, tmp_path, concurrency=1, progress=False, max_empty_retries=1)
    assert [r.repeat for r in judge.requests if r.payload["item_id"] == "p2"] == [0, 1]
    second = ScriptedJudge(lambda r: "Two circles.")
    answers = write_answers(_items(), second, tmp_path, progress=False, max_empty_retries=2)
    # p1 and p2's two empty replies come from the cache; only p2's third try reaches the judge
    assert answers == {"p1": "A red star.", "p2": "Two circles."}
    assert [(r.payload["item_id"], r.repeat) for r in second.requests] == [("p2", 2)]


def test_the_oracle_writes_no_answers():
    from mmalign_utils.judges.factory import make_judge

    with pytest.raises(JudgeConfigError, match="rates answers but writes none"):
        write_answers(_items(), make_judge("oracle"), "/nonexistent/never-created", progress=False)


def test_sft_judge_set_holds_the_judge_answers_and_refuses_holes():
    from mmalign_utils.annotation_report import build_datasets
    from mmalign_utils.train.tiny import synthetic_prompts

    prompts = [replace(p, judge_answer=f"judge says {i}") for i, p in enumerate(synthetic_prompts(4))]
    sets = build_datasets(prompts, judge_sft=True, fractions=())
    replies = [row["messages"][-1]["content"] for row in sets["sft_judge"]]
    assert [r if isinstance(r, str) else r[-1]["text"] for r in replies] == [f"judge says {i}" for i in range(4)]
    assert "sft_judge" not in build_datasets(prompts, fractions=())
    prompts[2] = replace(prompts[2], judge_answer=None)
    with pytest.raises(ValueError, match="no judge answer"):
        build_datasets(prompts, judge_sft=True, fractions=())
