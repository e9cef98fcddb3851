"""The toy's ShareGPT: text-only requests and answers in the stage-2 mix (train.text_mix)."""
import json
import random

import pytest

from mmalign_utils.train import text_mix, vit


def test_text_instructions_are_distinct_reproducible_and_leave_out_heldout_topics():
    qs = text_instructions = text_mix.text_instructions(300, seed=3)
    assert len(set(qs)) == 300 and text_mix.text_instructions(300, seed=3) == text_instructions
    assert text_mix.text_instructions(300, seed=4) != qs
    heldout = text_mix._heldout_text()
    # "board games" is a held-out topic (checked by hand in textsuite/prompts.jsonl): the filter must drop it
    assert "board games" in heldout
    dropped = [t for t in text_mix.TOPICS if t.lower() in heldout]
    assert "board games" in dropped
    assert not any(t in q for q in text_mix.text_instructions(len(text_mix.TASKS) * 10, seed=0) for t in dropped)
    # no held-out prompt is itself in the pool
    prompts = [json.loads(line)["prompt"] for line in
               (text_mix.Path(text_mix.__file__).parents[1] / "textsuite" / "prompts.jsonl").read_text().splitlines()]
    pool_size = len(text_mix.TASKS) * (len(text_mix.TOPICS) - len(dropped))
    assert not set(prompts) & set(text_mix.text_instructions(pool_size))
    with pytest.raises(ValueError, match="pool holds"):
        text_mix.text_instructions(pool_size + 1)


class _WordTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def test_write_text_answers_flags_cut_answers_and_resumes_from_its_cache(tmp_path, monkeypatch):
    calls = []

    def scripted(model, tok, conversations, settings, progress=False):
        calls.append([c.messages[-1]["content"] for c in conversations])
        # the second request is cut at max_new_tokens (5 words here)
        return ["  Short and done. ", "one two three four five"][:len(conversations)]

    monkeypatch.setattr(text_mix, "generate", scripted)
    cache = tmp_path / "answers.jsonl"
    qs = ["Explain tides in simple terms.", "Tell me something interesting about penguins."]
    out = text_mix.write_text_answers(qs, None, _WordTokenizer(), max_new_tokens=5, cache_path=cache, progress=False)
    assert [(a.instruction, a.answer, a.finished) for a in out] == [
        (qs[0], "Short and done.", True), (qs[1], "one two three four five", False)]
    assert len(cache.read_text().splitlines()) == 2
    calls.clear()
    again = text_mix.write_text_answers(qs, None, _WordTokenizer(), max_new_tokens=5, cache_path=cache,
                                        progress=False)
    assert again == out and calls == []
    # other settings are other answers: asked again
    text_mix.write_text_answers(qs[:1], None, _WordTokenizer(), max_new_tokens=6, cache_path=cache, progress=False)
    assert calls == [[qs[0]]]


def test_the_text_only_share_puts_imageless_conversations_from_the_pool_into_stage_2():
    images = vit.make_images(60, 0.0, 1, 96)
    cfg = vit.VITConfig(longform_share=0.0, text_only_share=0.5)
    plan = vit.stage2_plan(images, cfg, random.Random(0))
    pool = [("Explain tides in simple terms.", "Tides come from the moon's pull."),
            ("What is composting?", "Turning food scraps into soil.")]
    examples = vit.stage2_examples(plan, {}, pool)
    text = [ex for ex in examples if not ex.images]
    assert 15 <= len(text) <= 45  # Binomial(60, 0.5)
    assert len(examples) == 60
    for i, ex in enumerate(text):  # taken from the pool in turn, one user turn and the answer, no image part
        assert ex.messages == [{"role": "user", "content": pool[i % 2][0]},
                               {"role": "assistant", "content": pool[i % 2][1]}]
    with pytest.raises(ValueError, match="no text answers"):
        vit.stage2_examples(plan, {})
    # share 0 leaves the plan as it was before the text share existed: no text entries
    assert not any("text" in p for p in vit.stage2_plan(images, vit.VITConfig(text_only_share=0.0),
                                                         random.Random(0)))


def test_training_answer_keeps_finished_answers_and_cuts_others_at_their_last_whole_sentence():
    A = text_mix.TextAnswer
    assert text_mix.training_answer(A("q", " Done. ", True)) == "Done."
    assert text_mix.training_answer(A("q", "", True)) is None
    long_cut = " ".join(["word"] * 45) + ". Then \"quoted end.\" And a half"
    assert text_mix.training_answer(A("q", long_cut, False)) == " ".join(["word"] * 45) + '. Then "quoted end."'
    # too little left after the cut, or no sentence end at all
    assert text_mix.training_answer(A("q", "Short. And cut", False)) is None
    assert text_mix.training_answer(A("q", " ".join(["word"] * 60), False)) is None
    assert text_mix.training_answer(A("q", "Short. And cut", False), min_words=1) == "Short."
