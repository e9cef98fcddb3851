"""The evaluation runner: prompts and images handed to the model, option scoring vs generation, follow-up turns,
judges, results rows. Fast tests replace the model calls with fakes; one slow test runs the smoke toy LLaVA."""
from __future__ import annotations

import math

import pytest

from mmalign_utils.bench.shapes import runner
from mmalign_utils.bench.shapes.editions import EDITIONS, get_edition
from mmalign_utils.judges import ScriptedJudge
from mmalign_utils.results import ResultRow

class FakeModel:
    """Records the calls; option scoring always picks the first option, generation always says `reply`."""

    def __init__(self, reply: str = "No.", refuse_aliases: bool = False):
        self.reply, self.refuse_aliases = reply, refuse_aliases
        self.scored: list[tuple[list, list]] = []
        self.share_prefix: list[bool] = []
        self.generated: list[tuple[list, object]] = []

    def score_options(self, model, processor, conversations, options, batch_size=16, progress=False,
                      share_prefix=True):
        if self.refuse_aliases and len(options) > 2:
            raise ValueError("options share a first token")
        self.scored.append((list(conversations), list(options)))
        self.share_prefix.append(share_prefix)
        return [0] * len(conversations)

    def generate(self, model, processor, conversations, settings=None, progress=True):
        self.generated.append(([c.messages[:] for c in conversations], settings))
        return [self.reply for _ in conversations]


@pytest.fixture
def fake(monkeypatch):
    model = FakeModel()
    monkeypatch.setattr(runner, "score_options", model.score_options)
    monkeypatch.setattr(runner, "generate", model.generate)
    return model


def test_closed_questions_are_answered_by_option_scoring(fake):
    scores = runner.evaluate(None, None, editions=["shapes-pope", "shapes-mmbench"],
                             n_per_split={"shapes-pope": 4, "shapes-mmbench": 2})
    (pope_convs, pope_options), (mmb_convs, mmb_options) = fake.scored
    assert pope_options == ["Yes", "No", "yes", "no"] and mmb_options == ["A", "B", "C", "D"]
    first = pope_convs[0]
    assert first.images[0].size == (96, 96)
    assert first.messages[0]["content"][1]["text"].endswith("\nAnswer the question using a single word or phrase.")
    assert not fake.generated
    pope = {(m["split"], m["metric"]): m["value"] for m in scores["shapes-pope"]["metrics"]}
    # always "Yes": per split TP 2, FP 2, FN 0 -> P 0.5, R 1, F1 2/3, yes-ratio 1
    assert pope[("all", "f1_mean")] == pytest.approx(2 / 3)
    assert pope[("random", "yes_ratio")] == 1.0
    assert scores["shapes-pope"]["answers"]["random-1"] == "Yes"
    # always "A": a group is right in every rotation only if A is always the answer, impossible when options rotate
    mmb = scores["shapes-mmbench"]
    assert mmb["official"]["circular_acc"] == 0.0
    rows = [r for r in get_edition("shapes-mmbench").build(2, 0) if r["rotation"] == 0]
    assert mmb["official"]["vanilla_acc"] == sum(r["answer"] == "A" for r in rows) / 2
    assert "option scoring" in scores["shapes-pope"]["protocol"]
    assert fake.share_prefix == [True, True]  # questions about one image share their prompt prefix by default


def test_the_prefix_sharing_switch_reaches_option_scoring(fake):
    request = runner.AnswerRequest(id="q", text="Is there a circle?", scene=None, choices=("Yes", "No"))
    runner.answer_requests(None, None, [request], share_prefix=False)
    assert fake.share_prefix == [False]


def test_options_go_to_the_scorer_in_first_token_order():
    class Tokenizer:  # "No" < "no" < "Yes" < "yes" by id, as in no real vocabulary: only the order matters
        ids = {"Yes": 30, "No": 10, "yes": 40, "no": 20}

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [self.ids[text], 99]}

    class Processor:
        tokenizer = Tokenizer()

    options, owner = runner.in_first_token_order(Processor(), ["Yes", "No", "yes", "no"], ["Yes", "No", "Yes", "No"])
    assert options == ["No", "no", "Yes", "yes"] and owner == ["No", "No", "Yes", "Yes"]


def test_generate_mode_parses_free_text_with_the_official_rules(fake):
    scores = runner.evaluate(None, None, editions=["shapes-pope"], n_per_split=4, answer_mode="generate")
    assert not fake.scored
    _, settings = fake.generated[0]
    assert settings.max_new_tokens == runner.CLOSED_MAX_NEW_TOKENS and settings.greedy
    official = scores["shapes-pope"]["official"]
    assert official["splits"]["random"]["yes_ratio"] == 0.0  # "No." reads as no
    assert math.isnan(official["f1_mean"])
    assert "greedy generation" in scores["shapes-pope"]["protocol"]


def test_aliases_are_dropped_when_they_share_a_first_token(monkeypatch):
    model = FakeModel(refuse_aliases=True)
    monkeypatch.setattr(runner, "score_options", model.score_options)
    scores = runner.evaluate(None, None, editions=["shapes-pope"], n_per_split=2)
    assert model.scored[0][1] == ["Yes", "No"]
    assert set(scores["shapes-pope"]["answers"].values()) == {"Yes"}


def test_open_and_text_editions_are_generated(fake):
    scores = runner.evaluate(None, None, editions=["shapes-objhal", "textsuite"],
                             n_per_split={"shapes-objhal": 2, "textsuite": 3}, open_max_new_tokens=40)
    (objhal_msgs, objhal_settings), (text_msgs, text_settings) = fake.generated
    assert objhal_settings.max_new_tokens == 40
    assert objhal_msgs[0][0]["content"][0] == {"type": "image"}
    assert text_settings.max_new_tokens == 512 and isinstance(text_msgs[0][0]["content"], str)
    assert scores["shapes-objhal"]["official"]["CHAIRs"] == 0.0  # "No." names no object
    assert scores["textsuite"]["n_items"] == 3


def test_judged_text_editions_need_an_llm_judge_and_get_follow_up_turns(fake):
    with pytest.raises(ValueError, match="needs an LLM judge"):
        runner.evaluate(None, None, editions=["text-mtbench"], n_per_split=2)
    judge = ScriptedJudge(lambda request: "Fine. [[7]]")
    scores = runner.evaluate(None, None, editions=["text-mtbench"], n_per_split=2, judge=judge)
    turn1, turn2 = fake.generated[0][0], fake.generated[1][0]
    assert len(turn1[0]) == 1 and [m["role"] for m in turn2[0]] == ["user", "assistant", "user"]
    assert turn2[0][1]["content"] == "No."
    assert fake.generated[0][1].temperature == 0.7  # FastChat's temperature for categories it does not list
    assert scores["text-mtbench"]["official"]["overall"] == 7.0
    assert scores["text-mtbench"]["judge"] == "scripted:test"


def test_options_reach_the_build_and_score_functions(fake):
    from mmalign_utils.textsuite import load_text_suite

    references = {p.id: "A reference answer." for p in load_text_suite("heldout")[:2]}
    judge = ScriptedJudge(lambda request: "[{'model': 'model_2', 'rank': 1}, {'model': 'model_1', 'rank': 2}]")
    scores = runner.evaluate(None, None, editions=["text-alpacaeval"], n_per_split=2, judge=judge,
                             options={"text-alpacaeval": {"references": references}})
    assert scores["text-alpacaeval"]["official"]["n_total"] == 2
    with pytest.raises(ValueError, match="unknown option"):
        runner.evaluate(None, None, editions=["shapes-pope"], n_per_split=2, options={"shapes-pope": {"colour": 1}})


def test_result_rows_carry_names_values_and_bootstrap_cis(fake):
    scores = runner.evaluate(None, None, editions=["shapes-pope"], n_per_split=6)
    rows = runner.to_result_rows(scores, "toy-llava", "08_benchmarks", seed=3, profile="toy", n_boot=200)
    assert all(isinstance(r, ResultRow) for r in rows)
    assert len(rows) == len(scores["shapes-pope"]["metrics"])
    by_key = {(r.split, r.metric): r for r in rows}
    head = by_key[("all", "f1_mean")]
    assert head.benchmark == "shapes-pope" and head.model == "toy-llava" and head.seed == 3 and head.n == 18
    assert head.value == pytest.approx(2 / 3)
    assert head.ci_low <= head.value <= head.ci_high
    assert math.isnan(by_key[("random", "precision")].ci_low)  # no per-item values: no CI
    assert head.protocol.startswith("shapes-pope v1") and head.judge == ""


def test_every_edition_is_registered_with_its_original():
    assert set(EDITIONS) == {"shapes-pope", "shapes-mmbench", "shapes-objhal", "shapes-amber", "shapes-llavabench",
                             "shapes-mmvet", "shapes-mmhal", "textsuite", "text-mtbench", "text-alpacaeval"}
    assert get_edition("shapes-chair").name == "shapes-objhal"
    with pytest.raises(ValueError, match="unknown edition"):
        get_edition("shapes-vqa")


@pytest.mark.slow
def test_a_real_llava_runs_every_offline_edition(untrained_llava):
    # Plumbing with a real LlavaForConditionalGeneration (untrained tower: the answers are not the point here).
    model, processor = untrained_llava
    n = {"shapes-pope": 2, "shapes-mmbench": 1, "shapes-objhal": 1, "shapes-amber": 1, "shapes-llavabench": 1,
         "shapes-mmvet": 1, "shapes-mmhal": 1, "textsuite": 1}
    scores = runner.evaluate(model, processor, n_per_split=n, open_max_new_tokens=16)
    assert set(scores) == set(n)
    rows = runner.to_result_rows(scores, "smoke", "test", n_boot=50)
    assert {r.benchmark for r in rows} == set(n)
    assert all(isinstance(a, str) for s in scores.values() for a in s["answers"].values())
