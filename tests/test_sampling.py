"""Prompt sets, resumable self-sampling (with a fake sampler that records what it was asked) and the glue to the
annotator and the dataset builders. One slow test samples from a real (untrained) toy LLaVA."""
from __future__ import annotations

import json
from collections import Counter

import pytest
from PIL import Image

import mmalign_utils.generate as generate_module
from mmalign_utils.preference import AnnotatedPrompt
from mmalign_utils.sampling import (
    CHART_MIX, CHART_MIX_FAMILIES, LRV_MIX, LRV_MIX_FAMILIES, PROMPT_SCENE_OFFSET, load_lrv_instruct, load_scigraphqa,
    parse_mix, read_samples, self_sample, shapesworld_prompts, to_annotated_prompts, to_annotation_items,
)
from mmalign_utils.world.datasets import scene_seed


class FakeTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


class FakeSampler:
    """Stands in for generate.sample_k: answers name the question and the sample index; every call is kept."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, model, processor, conversations, k, **kwargs):
        questions = [c.messages[-1]["content"][-1]["text"] for c in conversations]
        assert all(len(c.images) == 1 and c.images[0].size == (96, 96) for c in conversations)
        self.calls.append(questions)
        return [[f"answer {j} to {q}" for j in range(k)] for q in questions]


@pytest.fixture
def fake_sampler(monkeypatch):
    sampler = FakeSampler()
    monkeypatch.setattr(generate_module, "sample_k", sampler)
    return sampler


def test_shapesworld_prompts_are_deterministic_and_mix_the_paper_sources():
    prompts = shapesworld_prompts(60, seed=3)
    again = shapesworld_prompts(60, seed=3)
    assert [p.question for p in prompts] == [p.question for p in again]
    assert len({p.prompt_id for p in prompts}) == 60
    sources = Counter(p.source for p in prompts)
    assert set(sources) == {"lrv", "scigraphqa"} and 15 <= sources["scigraphqa"] <= 45
    assert all((p.qa_item.kind == "chart") == (p.source == "scigraphqa") for p in prompts)
    # LRV-like negatives: existence questions about absent objects, incl. "describe the X" without an X
    lrv = [p.qa_item for p in prompts if p.family == "existence"]
    assert any(it.label == "no" for it in lrv)
    assert any(it.extra.get("subtype") == "lrv" for it in lrv)
    # held-out scenes far from the indices evaluation sets use
    assert prompts[0].qa_item.scene_seed == scene_seed(3, "heldout", PROMPT_SCENE_OFFSET)
    assert prompts[0].load_image().size == (96, 96)


def test_parse_mix_reads_weights_and_names_the_bad_part():
    assert parse_mix("", LRV_MIX, LRV_MIX_FAMILIES) == LRV_MIX
    assert parse_mix(" describe=3, lrv_instruction=1 ", LRV_MIX, LRV_MIX_FAMILIES) == {"describe": 3.0,
                                                                                  "lrv_instruction": 1.0}
    assert parse_mix("describe=1", CHART_MIX, CHART_MIX_FAMILIES) == {"describe": 1.0}
    for bad, why in (("describe", "name=weight"), ("pie=1", "unknown family 'pie'"), ("describe=x", "not a number"),
                     ("describe=1,describe=2", "appears twice"), ("describe=0", "sum to 0"),
                     ("lrv_instruction=1", "unknown family"), ("conversation=1", "unknown family")):
        with pytest.raises(ValueError, match=why):
            parse_mix(bad, CHART_MIX, CHART_MIX_FAMILIES)


def test_shapesworld_prompts_follow_a_given_mix():
    prompts = shapesworld_prompts(40, seed=2, lrv_mix={"describe": 1.0}, chart_mix={"describe": 1.0})
    assert {p.family for p in prompts} == {"describe"}
    assert {p.source for p in prompts} == {"lrv", "scigraphqa"}
    lrv_only = shapesworld_prompts(20, seed=2, lrv_mix={"lrv_instruction": 1.0})
    assert {p.qa_item.extra.get("subtype") for p in lrv_only if p.source == "lrv"} == {"lrv"}


def test_a_share_of_prompts_carries_an_answer_format_demand_the_oracle_reads():
    from mmalign_utils.judges.oracle import OracleItem
    from mmalign_utils.world.answer_format import INSTRUCTIONS, applicable_kinds

    plain = shapesworld_prompts(200, seed=4)
    demanded = shapesworld_prompts(200, seed=4, demand_share=0.25)
    assert [p.question for p in demanded] == [p.question for p in shapesworld_prompts(200, seed=4, demand_share=0.25)]
    with_demand = [(p, d) for p, d in zip(plain, demanded) if d.question != p.question]
    # a binomial(200, 0.25) share: mean 50, sd 6.1; 30-70 is more than 3 sd either side
    assert 30 <= len(with_demand) <= 70
    kinds = Counter()
    for p, d in with_demand:
        spec = d.qa_item.extra["answer_format"]
        kinds[spec["kind"]] += 1
        # the same image and question, the instruction appended as the last line, the kind in the prompt id
        assert d.qa_item.scene == p.qa_item.scene and d.question == f"{p.question}\n{INSTRUCTIONS[spec['kind']]}"
        assert d.prompt_id == f"{p.prompt_id}-{spec['kind']}"
        assert spec["kind"] in applicable_kinds(p.qa_item)
        # what the annotator sends the oracle carries the demand
        assert OracleItem.from_fields(d.question, d.oracle_fields()).answer_format == spec
    assert {"word", "sentence", "detail"} <= set(kinds)  # the default mix has no multiple choice: no letters
    # prompts without a demand are the share-0 prompts, ids included (their samples can be reused)
    assert all(p.prompt_id == d.prompt_id for p, d in zip(plain, demanded) if d.question == p.question)
    assert all(OracleItem.from_fields(p.question, p.oracle_fields()).answer_format == {} for p in plain)


def test_answer_format_rules_by_hand():
    from mmalign_utils.world.answer_format import honours, with_demand
    from mmalign_utils.world.qa import make_items
    from mmalign_utils.world.scenes import generate_scene

    word, sentence, detail = {"kind": "word"}, {"kind": "sentence"}, {"kind": "detail", "min_sentences": 3}
    assert [honours(a, word) for a in ("Yes.", "a red circle", "The large red circle.", "Two red circles are there.",
                                       "Yes. It is red.", "")] == [True, True, True, False, False, False]
    assert [honours(a, sentence) for a in ("There is one star.", "Yes.", "There is one star. It is big.",
                                           "There is one star in the corner")] == [True, False, False, True]
    assert [honours(a, detail) for a in ("One. Two. Three.", "One. Two.", "- a red circle\n- a blue square\n- a star")] \
        == [True, False, True]
    describe = make_items(generate_scene(5), "describe", __import__("random").Random(0))[0]
    with pytest.raises(ValueError, match="cannot take the demand 'letter'"):
        with_demand(describe, "letter")
    with pytest.raises(ValueError, match="unknown answer-format demand"):
        honours("x", {"kind": "bullets"})


def test_self_sample_resumes_without_resampling(tmp_path, fake_sampler):
    prompts = shapesworld_prompts(5, seed=0)
    out = tmp_path / "samples.jsonl"
    first = self_sample(None, FakeTokenizer(), prompts[:3], k=3, out_path=out, batch_size=2, progress=False)
    assert [r["prompt_id"] for r in first] == [p.prompt_id for p in prompts[:3]]
    assert len(fake_sampler.calls) == 2  # batches of 2 and 1
    before = out.read_text()
    # "killed" after the prefix; rerun on the full set: only the two new prompts are sampled
    full = self_sample(None, FakeTokenizer(), prompts, k=3, out_path=out, batch_size=2, progress=False)
    assert fake_sampler.calls[2:] == [[p.question for p in prompts[3:]]]
    assert out.read_text().startswith(before)
    assert [r["prompt_id"] for r in full] == [p.prompt_id for p in prompts]
    assert full[0]["answers"] == [f"answer {j} to {prompts[0].question}" for j in range(3)]
    assert full[0]["answer_tokens"] == [len(a.split()) for a in full[0]["answers"]]
    # a third run has nothing to do
    self_sample(None, FakeTokenizer(), prompts, k=3, out_path=out, batch_size=2, progress=False)
    assert len(fake_sampler.calls) == 3


def test_torn_last_line_is_dropped_and_resampled(tmp_path, fake_sampler):
    prompts = shapesworld_prompts(3, seed=0)
    out = tmp_path / "samples.jsonl"
    self_sample(None, FakeTokenizer(), prompts[:2], k=2, out_path=out, batch_size=8, progress=False)
    with open(out, "a") as f:  # a kill in the middle of writing the third record
        f.write('{"prompt_id": "' + prompts[2].prompt_id + '", "answ')
    assert [r["prompt_id"] for r in read_samples(out)] == [p.prompt_id for p in prompts[:2]]
    records = self_sample(None, FakeTokenizer(), prompts, k=2, out_path=out, batch_size=8, progress=False)
    assert fake_sampler.calls[-1] == [prompts[2].question]
    assert [json.loads(line)["prompt_id"] for line in out.read_text().splitlines()] == \
        [p.prompt_id for p in prompts]
    assert len(records) == 3


def test_other_settings_or_changed_prompts_are_refused(tmp_path, fake_sampler):
    prompts = shapesworld_prompts(2, seed=0)
    out = tmp_path / "samples.jsonl"
    self_sample(None, FakeTokenizer(), prompts, k=2, temperature=1.2, out_path=out, progress=False)
    with pytest.raises(ValueError, match="temperature"):
        self_sample(None, FakeTokenizer(), prompts, k=2, temperature=0.7, out_path=out, progress=False)
    changed = shapesworld_prompts(2, seed=0)
    changed[0].question = "Something else?"
    with pytest.raises(ValueError, match="prompt set changed"):
        self_sample(None, FakeTokenizer(), changed, k=2, temperature=1.2, out_path=out, progress=False)


def test_glue_to_annotation_items_and_annotated_prompts(tmp_path, fake_sampler):
    prompts = shapesworld_prompts(3, seed=0)
    samples = self_sample(None, FakeTokenizer(), prompts, k=2, out_path=tmp_path / "s.jsonl", progress=False)
    items = to_annotation_items(samples, prompts)
    assert [it["item_id"] for it in items] == [p.prompt_id for p in prompts]
    first = items[0]
    assert json.loads(first["scene_json"]) == prompts[0].qa_item.scene
    assert first["family"] == prompts[0].family and first["answers"] == samples[0]["answers"]
    assert isinstance(first["image"], Image.Image)
    score = {"helpfulness": 3, "correctness": 4, "coherence": 4, "complexity": 1, "verbosity": 2}
    annotations = [{"item_id": it["item_id"], "scores": [score, {**score, "correctness": 0}]} for it in items[:2]]
    with pytest.warns(UserWarning, match="1 of 3"):
        annotated = to_annotated_prompts(samples, annotations, prompts)
    assert [a.prompt_id for a in annotated] == [p.prompt_id for p in prompts[:2]]
    assert isinstance(annotated[0], AnnotatedPrompt)
    assert annotated[0].scores[1]["correctness"] == 0
    assert annotated[0].image_id == f"{prompts[0].qa_item.kind}-{prompts[0].qa_item.scene_seed}"
    assert annotated[0].reference_answer == prompts[0].qa_item.detailed_answer


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)


def test_lrv_loader_slices_and_reports_problems(tmp_path):
    records = [{"image_id": str(i), "question": f"<image>\nWhat is in image {i}?", "answer": "A dog."}
               for i in range(6)]
    for i in range(6):
        _image(tmp_path / "vg" / f"{i}.jpg")
    path = tmp_path / "filter_cap.json"
    path.write_text(json.dumps({"annotations": records}))
    prompts = load_lrv_instruct(path, tmp_path / "vg", start=2, stop=4)
    assert [p.prompt_id for p in prompts] == ["lrv-2", "lrv-3"]
    assert prompts[0].question == "What is in image 2?" and prompts[0].reference_answer == "A dog."
    assert prompts[0].load_image().size == (8, 8)
    with pytest.raises(ValueError, match="start=None"):
        load_lrv_instruct(path, tmp_path / "vg")  # the paper's 10000-13000 slice of a 6-record file
    (tmp_path / "vg" / "3.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 2 images"):
        load_lrv_instruct(path, tmp_path / "vg", start=2, stop=4)
    path.write_text(json.dumps([{"image_id": "1"}]))
    with pytest.raises(ValueError, match="record 0"):
        load_lrv_instruct(path, tmp_path / "vg", start=None, stop=None)


def test_scigraphqa_loader_reads_llava_question_files(tmp_path):
    _image(tmp_path / "imgs" / "scigraph" / "a.png")
    lines = [{"question_id": 7, "image": "a.png", "text": "What does the graph show?"},
             {"id": "x", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nTrend?"},
                                                              {"from": "gpt", "value": "Up."}]}]
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    prompts = load_scigraphqa(path, tmp_path / "imgs")
    assert [p.prompt_id for p in prompts] == ["scigraphqa-7", "scigraphqa-x"]
    assert prompts[1].question == "Trend?" and prompts[1].reference_answer == "Up."
    assert prompts[0].image_path.endswith("scigraph/a.png")
    path.write_text(json.dumps({"image": "a.png"}) + "\n")
    with pytest.raises(ValueError, match="line 1"):
        load_scigraphqa(path, tmp_path / "imgs")


@pytest.mark.slow
def test_self_sample_with_a_real_toy_llava(tmp_path):
    import torch

    from mmalign_utils.models import build_toy_mllm

    model, processor = build_toy_mllm(dtype=torch.bfloat16)
    prompts = shapesworld_prompts(2, seed=1)
    records = self_sample(model, processor, prompts, k=2, max_new_tokens=6, out_path=tmp_path / "s.jsonl",
                          batch_size=2, seed=0, progress=False)
    assert all(len(r["answers"]) == 2 and all(isinstance(a, str) for a in r["answers"]) for r in records)
    assert all(0 <= n <= 7 for r in records for n in r["answer_tokens"])


def test_the_lrv_demand_count_rule_by_hand():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "count_lrv_demands.py"
    spec = importlib.util.spec_from_file_location("count_lrv_demands", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    questions = ["Express the scene of the image in a sentence.",         # sentences
                 "Answer the question using a single word or phrase.",    # word
                 "Answer with the option's letter from the given choices directly.",  # letter
                 "Create a short poem about the scene.",                 # length
                 "In two sentences, give a detailed account.",           # sentences and length: one question
                 "Is there a red bus?", "Describe the sentence on the sign."]  # neither
    per_kind, any_kind, _ = module.count_demands(questions)
    assert dict(per_kind) == {"sentences": 2, "word": 1, "letter": 1, "length": 2}
    assert any_kind == 5


def test_the_demand_count_reads_lrv_lists_and_llava_question_files(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "count_lrv_demands.py"
    spec = importlib.util.spec_from_file_location("count_lrv_demands", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lrv = tmp_path / "evaluation_set.json"
    lrv.write_text(json.dumps([{"image_id": "1", "question": "Is there a dog?"}, {"image_id": "2", "question": "Q2"}]))
    llava = tmp_path / "questions.jsonl"
    llava.write_text('{"text": "What does the graph show?", "question_id": 0}\n\n{"text": "Q2", "question_id": 1}\n')
    assert module.read_questions(lrv) == ["Is there a dog?", "Q2"]
    assert module.read_questions(llava) == ["What does the graph show?", "Q2"]
