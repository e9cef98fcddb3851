"""The degradation analysis on hand-made answers: the summary, paired differences and the stated conclusion."""
import pandas as pd

from mmalign_utils import degradation as deg
from mmalign_utils.textsuite import load_text_suite


def _prompts():
    prompts = [p for p in load_text_suite("heldout")][:4]
    return prompts


def test_summary_and_paired_difference_on_hand_made_answers():
    prompts = _prompts()
    # The "base" answers repeat each prompt's first topic keywords in a long on-topic answer; the "mllm" ones are a
    # single word: their coverage and length must be lower, and never talk about shapes.
    base = [" ".join(p.topic_keywords) + ". " + "This is a long and helpful answer. " * 5 for p in prompts]
    mllm = ["Yes." for _ in prompts]
    table = pd.concat([deg.score_condition(prompts, base, "base"), deg.score_condition(prompts, mllm, "mllm")])
    summary = deg.summarize(table)
    cov = summary[summary.metric == "topic_coverage"].set_index("condition").value
    words = summary[summary.metric == "mean_words"].set_index("condition").value
    assert cov["base"] == 1.0 and cov["mllm"] == 0.0
    assert words["mllm"] == 1.0 and words["base"] > 30
    diff = deg.paired_difference(table, "mllm", "base", "n_words")
    assert diff["n"] == 4 and diff["mean_diff"] < -30
    talk = summary[summary.metric == "scene_talk_share"].set_index("condition").value
    assert talk["base"] == 0.0 and talk["mllm"] == 0.0
    text = deg.conclusion(summary, base="base", mllm="mllm")
    assert "Mean answer length" in text and "Topic coverage: base 1.00, mllm 0.00" in text


def test_scene_talk_is_flagged():
    prompts = _prompts()[:2]
    answers = ["There is a large red circle at the top left and a small blue square in the center.", "Fine."]
    table = deg.score_condition(prompts, answers, "mllm")
    assert list(table.scene_talk) == [1.0, 0.0]


def test_result_rows_name_the_split_by_condition():
    summary = pd.DataFrame([{"condition": "MLLM + irrelevant image", "metric": "prompt_strict_acc", "value": 0.1,
                             "ci_low": 0.0, "ci_high": 0.2, "n": 10},
                            {"condition": "base LLM", "metric": "prompt_strict_acc", "value": 0.3,
                             "ci_low": 0.2, "ci_high": 0.4, "n": 10}])
    rows = deg.result_rows(summary, {"MLLM + irrelevant image": "toy-llava", "base LLM": "smollm2"}, "01", 0, "toy",
                           noisy_conditions=["MLLM + irrelevant image"])
    assert [(r.model, r.split) for r in rows] == [("toy-llava", "noisy-image"), ("smollm2", "text")]
