"""SteerLM inference: the attribute string in the prompt (exactly as in training), attribute validation, and the
verbosity/complexity sweep with its length summary and scorer hook."""
from __future__ import annotations

import re

import pytest

from mmalign_utils import preference
from mmalign_utils.generate import GenerationSettings, render_prompt
from mmalign_utils.train.steer import (
    SteerItem, attribute_sweep, generate_steered, steer_attributes, steered_conversation, sweep_summary,
)
from mmalign_utils.train.tiny import build_tiny_llava, synthetic_prompts


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_llava()


def test_inference_prompt_renders_the_all_fours_attribute_string(tiny):
    _, processor = tiny
    from PIL import Image

    conversation = steered_conversation(SteerItem("What is shown?", image=Image.new("RGB", (32, 32))))
    expected = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                "<|im_start|>user\n<image>\nWhat is shown?\n"
                "helpfulness:4,correctness:4,coherence:4,complexity:4,verbosity:4<|im_end|>\n"
                "<|im_start|>assistant\n")
    assert render_prompt(processor, conversation) == expected
    text_only = steered_conversation(SteerItem("Hi?"), steer_attributes(verbosity=0, complexity=2))
    assert text_only.messages[0]["content"] == \
        "Hi?\nhelpfulness:4,correctness:4,coherence:4,complexity:2,verbosity:0"


def test_inference_user_turn_equals_the_training_user_turn_for_the_same_scores():
    prompt = synthetic_prompts(1)[0]
    prompt.scores[0] = {attribute: 4 for attribute in preference.ATTRIBUTES}
    training_user = preference.build_steerlm([prompt])[0]["messages"][0]
    inference_user = steered_conversation(SteerItem(prompt.question, image=prompt.image)).messages[0]
    assert [p["type"] for p in training_user["content"]] == ["image", "text"]
    assert training_user["content"][1]["text"] == inference_user["content"][1]["text"]


def test_attribute_values_are_checked():
    assert steer_attributes(verbosity=1)["verbosity"] == 1
    with pytest.raises(ValueError, match="verbosity"):
        steer_attributes(verbosity=5)
    with pytest.raises(ValueError, match="unknown SteerLM attributes"):
        steer_attributes(tone=3)


def fake_generate(model, processor, conversations, settings, progress=False):
    """Answers with as many words as the requested verbosity (plus one per complexity point, as 'x')."""
    answers = []
    for conversation in conversations:
        content = conversation.messages[-1]["content"]
        text = content if isinstance(content, str) else content[-1]["text"]
        verbosity = int(re.search(r"verbosity:(\d)", text).group(1))
        complexity = int(re.search(r"complexity:(\d)", text).group(1))
        answers.append(" ".join(["word"] * (verbosity + 1) + ["x"] * complexity))
    return answers


def test_each_sweep_varies_one_attribute_and_summarises_lengths(tiny):
    _, processor = tiny
    items = [SteerItem("A?", item_id="a"), SteerItem("B?", item_id="b")]
    table = attribute_sweep(None, processor, items, generate_fn=fake_generate,
                            scorers={"has_x": lambda item, answer: float("x" in answer)})
    assert len(table) == 2 * (5 + 5)
    verbosity_rows = table[table["setting"].str.startswith("verbosity=")]
    assert set(verbosity_rows["complexity"]) == {4}  # the other attribute stays at its base value
    summary = sweep_summary(table)
    verbosity = summary[summary["attribute"] == "verbosity"].set_index("value")
    # verbosity v, complexity 4: v + 1 words + 4 'x' words
    assert verbosity["words"].to_dict() == {v: v + 1 + 4 for v in range(5)}
    assert verbosity["spearman_words"].iloc[0] == pytest.approx(1.0)
    complexity = summary[summary["attribute"] == "complexity"].set_index("value")
    assert complexity["has_x"].to_dict() == {0: 0.0, 1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}


def test_grid_sweep_covers_every_combination(tiny):
    _, processor = tiny
    table = attribute_sweep(None, processor, ["Q?"], sweep={"verbosity": (0, 4), "complexity": (1, 2)},
                            mode="grid", generate_fn=fake_generate)
    assert sorted(table["setting"]) == ["complexity=1,verbosity=0", "complexity=1,verbosity=4",
                                        "complexity=2,verbosity=0", "complexity=2,verbosity=4"]
    with pytest.raises(ValueError, match="mode"):
        attribute_sweep(None, processor, ["Q?"], mode="diagonal", generate_fn=fake_generate)


def test_generation_runs_on_a_real_model(tiny):
    model, processor = tiny
    items = [SteerItem("What colour?", image=synthetic_prompts(1)[0].image)]
    answers = generate_steered(model, processor, items, settings=GenerationSettings(max_new_tokens=3))
    assert len(answers) == 1 and isinstance(answers[0], str)
    table = attribute_sweep(model, processor, items, sweep={"verbosity": (0, 4)},
                            settings=GenerationSettings(max_new_tokens=3))
    assert list(table["verbosity"]) == [0, 4] and (table["tokens"] <= 3).all()
