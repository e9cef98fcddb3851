"""AlpacaEval scorer: the win-rate fixture of benchmarks.md §13, the swap rule, both parsers, an end-to-end run
with a scripted judge and a synthetic ChatML template (not AlpacaEval's prompt), and the length-controlled GLM's
mechanics."""
import json
import math
import random

import pytest

from mmalign_utils.bench import alpacaeval as ae
from mmalign_utils.bench.common import BenchmarkDataError
from mmalign_utils.judges.base import JudgeReply, ScriptedJudge

TEMPLATE = ("<|im_start|>system\nYou compare outputs.\n<|im_end|>\n"
            "<|im_start|>user\nINSTRUCTION: {instruction}\nFIRST: {output_1}\nSECOND: {output_2}\n<|im_end|>")
EVAL_SET = [
    {"instruction": "Write a haiku about rain.", "output": "REF rain", "generator": "text_davinci_003",
     "dataset": "koala"},
    {"instruction": "Name three colours.", "output": "REF colours", "generator": "text_davinci_003",
     "dataset": "oasst"},
    {"instruction": "What is 2+2?", "output": "4", "generator": "text_davinci_003", "dataset": "vicuna"},
    {"instruction": "Explain gravity.", "output": "REF gravity", "generator": "text_davinci_003",
     "dataset": "selfinstruct"},
    {"instruction": "Give me a recipe.", "output": "REF recipe", "generator": "text_davinci_003",
     "dataset": "helpful_base"},
]
# The swap rule, written out: random.Random("is_switched_outputs" + instruction + "0").choices([False, True]).
SWITCHED = {"Write a haiku about rain.": False, "Name three colours.": True, "What is 2+2?": False,
            "Explain gravity.": False, "Give me a recipe.": True}
MODEL = {"Write a haiku about rain.": "MODEL drops fall", "Name three colours.": "MODEL red green blue",
         "What is 2+2?": "4",  # identical to the reference: a draw without a judge call
         "Explain gravity.": "MODEL mass attracts", "Give me a recipe.": "MODEL pasta"}
# What the judge thinks: the model wins haiku and colours, loses gravity, and the recipe reply is unparsable.
MODEL_WINS = {"Write a haiku about rain.": True, "Name three colours.": True, "Explain gravity.": False}


def ranking_judge(request):
    user = request.messages[-1]["content"]
    instruction = user.split("\n")[0].removeprefix("INSTRUCTION: ")
    if instruction == "Give me a recipe.":
        return "I prefer the first one."
    model_is_first = user.split("\n")[1].startswith("FIRST: MODEL")
    first_wins = MODEL_WINS[instruction] == model_is_first
    ranks = (1, 2) if first_wins else (2, 1)
    return f"[{{'model': 'model_1', 'rank': {ranks[0]}}}, {{'model': 'model_2', 'rank': {ranks[1]}}}]"


def write_data_dir(root):
    (root / "alpaca_eval" / "alpaca_eval_gpt4").mkdir(parents=True)
    (root / "alpaca_eval" / "alpaca_eval.json").write_text(json.dumps(EVAL_SET))
    (root / "alpaca_eval" / "alpaca_eval_gpt4" / "alpaca_eval.txt").write_text(TEMPLATE)
    return root


@pytest.fixture
def items(tmp_path):
    return ae.load(write_data_dir(tmp_path))


def test_win_rate_fixture():
    result = ae.win_rate_summary([1, 2, 2, 1.5, 0, math.nan])
    # 0 -> 1.5, NaN dropped, x = pref - 1 = [0, 1, 1, 0.5, 0.5]: mean 0.6 -> 60.0.
    assert result["win_rate"] == pytest.approx(60.0)
    assert (result["n_wins"], result["n_wins_base"], result["n_draws"], result["n_total"]) == (2, 1, 2, 5)
    # sem with ddof 1: squared deviations 0.36 + 0.16 + 0.16 + 0.01 + 0.01 = 0.70; sqrt(0.70 / 4 / 5) = 0.18708.
    assert result["standard_error"] == pytest.approx(math.sqrt(0.70 / 4 / 5) * 100)
    assert result["standard_error"] == pytest.approx(18.708, abs=1e-3)
    assert result["discrete_win_rate"] == pytest.approx(60.0)


def test_discrete_win_rate_rounds_weighted_preferences():
    # 1.75 -> 2 (win), 1.25 -> 1 (loss), 1.5 stays a draw: discrete (1 + 0 + 0.5) / 3; continuous 0.5 on average.
    result = ae.win_rate_summary([1.75, 1.25, 1.5])
    assert result["win_rate"] == pytest.approx(50.0)
    assert result["discrete_win_rate"] == pytest.approx(50.0)
    assert ae.win_rate_summary([1.75, 1.75, 1.25])["discrete_win_rate"] == pytest.approx(200 / 3)


@pytest.mark.parametrize("completion, expected", [
    ("[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]", 1.0),
    ("[{'model': 'model_1', 'rank': 2}, {'model': 'model_2', 'rank': 1}]", 2.0),
    ("[{'model': 'model_1', 'rank': 3}, {'model': 'model_2', 'rank': 1}]", math.nan),
    ("Output (a) is better.", math.nan),
])
def test_ranking_parser(completion, expected):
    value = ae.ranking_preference(completion)
    assert (math.isnan(value) and math.isnan(expected)) or value == expected


def test_logprob_parser():
    # P(m) = 0.25, P(M) = 0.75 -> 2 - 0.25 = 1.75.
    top = [{"token": "M", "logprob": math.log(0.75)}, {"token": "m", "logprob": math.log(0.25)},
           {"token": "Both", "logprob": -12.0}]
    assert ae.logprob_preference(top) == pytest.approx(1.75)
    assert ae.logprob_preference([{"token": "m", "logprob": -0.1}]) == pytest.approx(1.0)  # M missing: P(m) = 1
    assert ae.logprob_preference([{"token": "M", "logprob": -0.1}]) == pytest.approx(2.0)
    assert math.isnan(ae.logprob_preference([{"token": "The", "logprob": -0.1}]))


def test_swap_rule_is_seeded_by_instruction():
    for instruction, switched in SWITCHED.items():
        assert ae.is_switched(instruction) is switched
        assert ae.is_switched(instruction, seed=0) is random.Random(
            "is_switched_outputs" + instruction + "0").choices([False, True], k=1)[0]


def test_template_filling_and_chatml():
    filled = ae.fill_template(TEMPLATE, {"instruction": "Say {output_1}", "output_1": "A", "output_2": "B"})
    # Placeholders are replaced in order of first appearance, first occurrence only: the instruction's literal
    # "{output_1}" is what the later replacement hits, exactly as AlpacaEval's make_prompts does.
    assert "INSTRUCTION: Say A\nFIRST: {output_1}\nSECOND: B" in filled
    messages = ae.prompt_to_chatml(ae.fill_template(TEMPLATE, {"instruction": "I", "output_1": "A",
                                                               "output_2": "B"}))
    assert messages == [{"content": "You compare outputs.", "role": "system"},
                        {"content": "INSTRUCTION: I\nFIRST: A\nSECOND: B", "role": "user"}]
    named = ae.prompt_to_chatml("<|im_start|>system name=example_user\nHi\n<|im_end|>")
    assert named == [{"content": "Hi", "role": "system", "name": "example_user"}]
    with pytest.raises(ValueError, match="once"):
        ae.fill_template("{instruction} {instruction}", {"instruction": "x"})


def test_end_to_end_ranking_protocol(items):
    judge = ScriptedJudge(ranking_judge)
    result = ae.score(items, MODEL, judge=judge, annotator_prompt=TEMPLATE)
    prefs = {a["instruction"]: a["preference"] for a in result["annotations"]}
    # Unswapped frame: 2 = model wins. haiku 2 (shown unswapped), colours 2 (shown swapped: judge said rank 1 for
    # the first = model, i.e. 1 -> 3 - 1 = 2), 2+2 identical -> 0, gravity 1, recipe unparsable -> NaN.
    assert prefs["Write a haiku about rain."] == 2 and prefs["Name three colours."] == 2
    assert prefs["What is 2+2?"] == 0 and prefs["Explain gravity."] == 1 and math.isnan(prefs["Give me a recipe."])
    # x = [1, 1, 0.5, 0] -> 62.5; the NaN row is dropped from n_total.
    assert result["win_rate"] == pytest.approx(62.5) and result["n_total"] == 4 and result["n_draws"] == 1
    assert result["n"] == 5 and result["n_parse_failures"] == 1
    assert len(judge.requests) == 4  # no call for identical outputs
    assert {a["instruction"]: a["is_switched_outputs"] for a in result["annotations"]
            if a["raw_completion"] is not None} == {k: v for k, v in SWITCHED.items() if k != "What is 2+2?"}
    shown = {r.messages[-1]["content"].split("\n")[0]: r.messages[-1]["content"] for r in judge.requests}
    assert "FIRST: MODEL red green blue\nSECOND: REF colours" in shown["INSTRUCTION: Name three colours."]
    assert "FIRST: REF rain\nSECOND: MODEL drops fall" in shown["INSTRUCTION: Write a haiku about rain."]
    assert all(r.temperature == 0.0 and r.max_tokens == 100 for r in judge.requests)
    assert result["avg_length"] == pytest.approx(sum(len(v) for v in MODEL.values()) / 5)


class LogprobJudge(ScriptedJudge):
    """Believes the model's output is better with probability 0.75, and returns first-token log-probabilities."""

    def _call(self, request):
        self.requests.append(request)
        assert request.top_logprobs == 5 and request.max_tokens == 1
        model_is_first = "FIRST: MODEL" in request.messages[-1]["content"]
        p_first = 0.75 if model_is_first else 0.25
        top = [{"token": "m", "logprob": math.log(p_first)}, {"token": "M", "logprob": math.log(1 - p_first)}]
        return JudgeReply(text="m" if p_first > 0.5 else "M", judge_id=self.judge_id, raw={"top_logprobs": top})


def test_end_to_end_logprob_protocol(items):
    judge = LogprobJudge([])
    model = {k: v for k, v in MODEL.items() if k != "What is 2+2?"}
    result = ae.score([it for it in items if it["id"] in model], model, judge=judge, annotator_prompt=TEMPLATE,
                      protocol="weighted_alpaca_eval_gpt4_turbo")
    # Whether shown first or second, the model's preference is 1.75 (2 - 0.25, or 3 - (2 - 0.75)): 75.0.
    assert all(a["preference"] == pytest.approx(1.75) for a in result["annotations"])
    assert result["win_rate"] == pytest.approx(75.0) and result["n_wins"] == 4


def test_logprob_protocol_needs_a_backend_with_logprobs(items):
    with pytest.raises(ValueError, match="log-probabilities"):
        ae.score(items[:1], MODEL, judge=ScriptedJudge(lambda r: "m"), annotator_prompt=TEMPLATE,
                 protocol="weighted_alpaca_eval_gpt4_turbo")


def test_missing_and_unknown_instructions(items):
    partial = {k: v for k, v in MODEL.items() if k != "Explain gravity."}
    partial["Not in the eval set"] = "ignored"
    with pytest.raises(ValueError, match="Explain gravity"):
        ae.score(items, partial, judge=ScriptedJudge(ranking_judge), annotator_prompt=TEMPLATE)
    result = ae.score(items, partial, judge=ScriptedJudge(ranking_judge), annotator_prompt=TEMPLATE,
                      allow_missing=True)
    assert result["n"] == 4 and result["n_missing"] == 1


def test_outputs_and_annotations_round_trip(tmp_path, items):
    two = {"Write a haiku about rain.": "drops", "Name three colours.": "red"}
    ae.write_answers(tmp_path / "outputs.json", two, generator="toy", items=items)
    rows = json.loads((tmp_path / "outputs.json").read_text())
    assert rows[0] == {"instruction": "Write a haiku about rain.", "output": "drops", "generator": "toy",
                       "dataset": "koala"}
    assert ae.read_answers(tmp_path / "outputs.json") == two
    annotations = [{"instruction": "Write a haiku about rain.", "output_1": "REF rain", "output_2": "drops",
                    "preference": 2.0, "annotator": "alpaca_eval_gpt4"},
                   {"instruction": "Name three colours.", "output_1": "REF colours", "output_2": "red",
                    "preference": None, "annotator": "alpaca_eval_gpt4"}]
    (tmp_path / "annotations.json").write_text(json.dumps(annotations))
    assert ae.read_answers(tmp_path / "annotations.json") == two
    summary = ae.score_annotations(ae.read_annotations(tmp_path / "annotations.json"))
    assert summary["win_rate"] == 100.0 and summary["n_total"] == 1


def test_duplicate_outputs_are_refused(tmp_path):
    rows = [{"instruction": "A", "output": "x", "generator": "m"},
            {"instruction": "A", "output": "y", "generator": "m"}]
    (tmp_path / "dup.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match="repeats instruction"):
        ae.read_answers(tmp_path / "dup.json")


def test_prompt_file_is_hash_checked(tmp_path):
    write_data_dir(tmp_path)
    assert ae.load_annotator_prompt(tmp_path, verify_hash=False) == TEMPLATE
    with pytest.raises(BenchmarkDataError, match="not a known version"):
        ae.load_annotator_prompt(tmp_path)


def test_score_file(tmp_path, items):
    ae.write_answers(tmp_path / "outputs.json", MODEL)
    result = ae.score_file(tmp_path / "outputs.json", tmp_path, judge=ScriptedJudge(ranking_judge),
                           verify_hash=False)
    assert result["win_rate"] == pytest.approx(62.5)


def synthetic_gamed(n, difficulty):
    """Two gamed baselines of the reference model: verbose (longer, wins 80%) and concise (shorter, wins 20%)."""
    import pandas as pd

    rows = [{"model": name, "index": i, "instruction_difficulty": difficulty[i], "preference": p,
             "std_delta_len": delta, "not_gamed_baseline": False}
            for name, delta, p in (("verbose", -1.5, 0.8), ("concise", 1.5, 0.2)) for i in range(n)]
    return pd.DataFrame(rows)


def test_length_controlled_win_rate_mechanics():
    pytest.importorskip("sklearn")
    rng = random.Random(0)
    n = 40
    difficulty = [rng.gauss(0, 1) for _ in range(n)]
    gamed = synthetic_gamed(n, difficulty)
    longer = [i % 5 != 0 for i in range(n)]  # the model is longer than the reference on 80% of instructions
    ref_len, model_len = [100] * n, [200 if x else 50 for x in longer]
    # Wins that track length exactly: raw 80%, and the GLM gives them all to length -> 50% at equal length.
    wins_by_length = [2.0 if x else 1.0 for x in longer]
    lc = ae.length_controlled_win_rate(wins_by_length, ref_len, model_len, list(range(n)), gamed)
    assert ae.win_rate_summary(wins_by_length)["win_rate"] == pytest.approx(80.0)
    assert lc == pytest.approx(50.0, abs=2.0)
    # Wins that do not depend on length (90%, long or short) keep a length-controlled rate well above 50.
    wins_anyway = [1.0 if i % 10 == 0 else 2.0 for i in range(n)]
    lc_quality = ae.length_controlled_win_rate(wins_anyway, ref_len, model_len, list(range(n)), gamed)
    assert 60.0 < lc_quality < 90.0
