"""Table 4 (the paper's numbers, ours beside them) and the text editions scored on hand-written answers."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from mmalign_utils.bench.shapes import table, text_editions
from mmalign_utils.judges import ScriptedJudge
from mmalign_utils.results import RESULT_COLUMNS


def test_paper_table4_holds_the_papers_numbers():
    t = table.paper_table4()
    assert list(t.index) == ["base LLM", "MLLM", "RLHF", "SFT", "SteerLM", "rejection sampling", "DPO"]
    assert list(t.columns) == ["MM-Vet", "LLaVA-Bench", "POPE", "MMBench", "MT-Bench", "AlpacaEval"]
    # paper-recipe.md section 6.1
    assert t.loc["DPO"].tolist() == [41.2, 79.1, 0.870, 66.8, 6.73, 86.4]
    assert t.loc["MLLM"].tolist() == [36.3, 73.1, 0.859, 67.4, 5.99, 79.3]
    assert t.loc["rejection sampling", "POPE"] == 0.883 and t.loc["SFT", "AlpacaEval"] == 50.2
    assert math.isnan(t.loc["base LLM", "MM-Vet"]) and t.loc["base LLM", "MT-Bench"] == 6.57
    assert t.attrs["paper_models"]["RLHF"] == "LLaVA-RLHF-13B"


def _row(model: str, benchmark: str, split: str, metric: str, value: float, seed: int = 0,
         profile: str = "toy") -> dict:
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(notebook="nb", model=model, benchmark=benchmark, split=split, metric=metric, value=value, n=10,
               seed=seed, profile=profile)
    return row


def test_render_table4_puts_our_numbers_beside_the_papers():
    results = pd.DataFrame([
        _row("toy-llava", "shapes-pope", "all", "f1_mean", 0.6, seed=0),
        _row("toy-llava", "shapes-pope", "all", "f1_mean", 0.8, seed=1),  # two seeds: mean 0.7
        _row("toy-llava", "shapes-mmbench", "all", "circular_acc", 0.5),  # a fraction, shown in % as the paper
        _row("toy-llava", "shapes-pope", "random", "f1", 0.1),  # another split: not the POPE column
        _row("toy-llava-dpo", "shapes-mmvet", "all", "total", 42.0),
        _row("smollm2-135m-instruct", "textsuite", "heldout", "prompt_strict_acc", 0.25),
        _row("toy-llava", "shapes-pope", "all", "f1_mean", 0.1, profile="paper"),  # another profile
    ])
    t = table.render_table4(results, "toy")
    assert t.loc["MLLM", ("POPE", "ours")] == pytest.approx(0.7)
    assert t.loc["MLLM", ("POPE", "paper")] == 0.859
    assert t.loc["MLLM", ("MMBench", "ours")] == pytest.approx(50.0)
    assert t.loc["DPO", ("MM-Vet", "ours")] == 42.0 and t.loc["DPO", ("MM-Vet", "paper")] == 41.2
    assert t.loc["base LLM", ("Text suite", "ours")] == pytest.approx(25.0)
    assert math.isnan(t.loc["SFT", ("POPE", "ours")])  # no results for that model
    assert t.attrs["models"]["DPO"] == "toy-llava-dpo"
    custom = table.render_table4(results, "toy", models={"SFT": "toy-llava"})
    assert custom.loc["SFT", ("POPE", "ours")] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="lacks columns"):
        table.render_table4(pd.DataFrame({"model": []}), "toy")


def test_textsuite_edition_scores_hand_answers():
    items = text_editions.build_textsuite(n_per_split=2)
    assert [it["id"] for it in items] == ["ts-h001", "ts-h002"]
    good = ("Leaves are green in summer because they hold chlorophyll, the pigment that captures sunlight. In "
            "autumn the days get shorter and colder, so trees stop making chlorophyll and it breaks down. The "
            "yellow and orange pigments that were hidden all summer then show, and some trees also make red ones.")
    answers = {"ts-h001": good, "ts-h002": "Sunlight bends in raindrops."}  # 1 sentence, needs 3
    result = text_editions.score_textsuite(items, answers)
    values = {m["metric"]: m["value"] for m in result["metrics"]}
    assert values["prompt_strict_acc"] == 0.5  # ts-h001 passes both instructions, ts-h002 fails its one
    assert values["instruction_strict_acc"] == pytest.approx(2 / 3)
    assert result["protocol"].startswith("ifeval-style")


def test_mtbench_style_edition_with_a_scripted_judge():
    items = text_editions.build_mtbench(n_per_split=2)
    assert items[0]["turns"][1] == text_editions.FOLLOW_UPS[0]
    reqs = text_editions.requests_mtbench(items)
    assert reqs[0].followups == (text_editions.FOLLOW_UPS[0],)
    judge = ScriptedJudge(["[[8]]", "[[6]]", "[[4]]", "no rating"])  # item 1 turns 1, 2; item 2 turns 1, 2
    result = text_editions.score_mtbench(items, {it["id"]: ["a", "b"] for it in items}, judge=judge)
    values = {(m["split"], m["metric"]): m["value"] for m in result["metrics"]}
    assert values[("all", "overall")] == pytest.approx(6.0)  # (8 + 6 + 4) / 3; the unparsed one is dropped
    assert values[("turn1", "score")] == pytest.approx(6.0) and values[("turn2", "score")] == 6.0
    assert "our judge prompts" in result["protocol"]
    with pytest.raises(ValueError, match="needs an LLM judge"):
        text_editions.score_mtbench(items, {}, judge=None)


def test_alpacaeval_style_edition_needs_references():
    with pytest.raises(ValueError, match="references"):
        text_editions.build_alpacaeval(n_per_split=2)
    items = text_editions.build_alpacaeval(n_per_split=2, references={"ts-h001": "ref 1", "ts-h002": "ref 2"})
    judge = ScriptedJudge(lambda r: "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]")
    result = text_editions.score_alpacaeval(items, {it["id"]: "mine" for it in items}, judge=judge)
    # model_1 ranked first; AlpacaEval swaps the outputs for some instructions, so each win is the model's
    # exactly when that instruction was shown swapped
    swapped = [a["is_switched_outputs"] for a in result["official"]["annotations"]]
    assert result["official"]["win_rate"] == pytest.approx(100 * sum(swapped) / 2)
