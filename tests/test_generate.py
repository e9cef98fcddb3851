"""The generation engine: batching must not change greedy answers, shared-prefix sampling must decode the same
tokens as HF generate when it is made greedy, and option scoring must pick what greedy decoding starts with."""
import pytest
import torch
from transformers import DynamicCache

from mmalign_utils.generate import (Conversation, GenerationSettings, _common_prefix_length, _prefix_can_be_shared,
                                    _split_by_conversation, _stop_ids, answer_logits, encode_batch, generate,
                                    sample_k, score_options)

QUESTIONS = ["What is the capital of France?", "Name a colour of the sky.", "Is fire hot? Answer yes or no.",
             "Write one word that rhymes with cat."]


def test_batched_greedy_equals_one_at_a_time(smollm2):
    model, tok = smollm2
    convs = [Conversation.user(q) for q in QUESTIONS]
    batched = generate(model, tok, convs, GenerationSettings(max_new_tokens=12, batch_size=4), progress=False)
    single = [generate(model, tok, [c], GenerationSettings(max_new_tokens=12), progress=False)[0] for c in convs]
    assert batched == single
    assert "Paris" in batched[0]


@pytest.fixture
def dropped_rows(monkeypatch):
    """Counts the rows finished answers take out of the batch's cache."""
    calls: list[int] = []
    select = DynamicCache.batch_select_indices

    def spy(self, indices):
        calls.append(int(indices.numel()))
        return select(self, indices)

    monkeypatch.setattr(DynamicCache, "batch_select_indices", spy)
    return calls


def test_greedy_answers_are_hf_generate_tokens_while_finished_rows_leave_the_batch(smollm2, dropped_rows):
    """The plain transformers path decodes every row until the last one ends; ours drops finished rows. The
    tokens must be the same: a one-number answer ends long before a haiku or a list of five animals."""
    model, tok = smollm2
    convs = [Conversation.user(q) for q in ("What is 2+2? Reply with the number only.", "Write a haiku about the sea.",
                                            "Name five animals, one per line.", "Say hello.")]
    ours = generate(model, tok, convs, GenerationSettings(max_new_tokens=40, batch_size=4), progress=False)
    assert dropped_rows, "no answer finished early: the test does not exercise dropping rows"
    enc = encode_batch(tok, convs)
    stop = _stop_ids(model, tok)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=40, do_sample=False, temperature=None, top_p=None, top_k=None,
                             eos_token_id=stop, pad_token_id=tok.pad_token_id)
    theirs = [t.strip() for t in tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
    lengths = sorted(len(tok(t)["input_ids"]) for t in theirs)
    assert lengths[0] < 10 and lengths[-1] > 20  # rows really end at different steps
    # generate() sorts the batch by prompt length; the answers come back in input order either way
    assert ours == theirs


def test_image_conversations_batch_with_left_padding(untrained_llava):
    from PIL import Image

    model, processor = untrained_llava
    imgs = [Image.new("RGB", (96, 96), c) for c in ("red", "blue")]
    convs = [Conversation.user("What colour is this?", imgs[0]), Conversation.user("Describe the picture briefly.", imgs[1])]
    batched = generate(model, processor, convs, GenerationSettings(max_new_tokens=6, batch_size=2), progress=False)
    single = [generate(model, processor, [c], GenerationSettings(max_new_tokens=6), progress=False)[0] for c in convs]
    assert batched == single


def test_sample_k_shares_the_prompt_and_matches_greedy_when_cold(smollm2):
    model, tok = smollm2
    convs = [Conversation.user(q) for q in QUESTIONS[:3]]
    greedy = generate(model, tok, convs, GenerationSettings(max_new_tokens=10, batch_size=3), progress=False)
    # A vanishing temperature turns sampling into arg-max: every one of the k samples must equal greedy decoding.
    cold = sample_k(model, tok, convs, k=2, temperature=1e-6, max_new_tokens=10, batch_size=3, progress=False)
    assert [c[0] for c in cold] == greedy and [c[1] for c in cold] == greedy


def test_sample_k_is_seeded_and_gives_k_answers(smollm2):
    model, tok = smollm2
    convs = [Conversation.user(QUESTIONS[1])]
    a = sample_k(model, tok, convs, k=3, temperature=1.2, max_new_tokens=8, seed=5, progress=False)
    b = sample_k(model, tok, convs, k=3, temperature=1.2, max_new_tokens=8, seed=5, progress=False)
    assert a == b and len(a[0]) == 3


def test_sampled_answers_keep_their_order_when_rows_leave(smollm2, dropped_rows):
    """k samples of several prompts: each prompt's answers stay with it after finished rows are dropped."""
    model, tok = smollm2
    convs = [Conversation.user("What is the capital of France? One word."),
             Conversation.user("Write a long story about a dragon who learns to cook.")]
    answers = sample_k(model, tok, convs, k=4, temperature=0.7, max_new_tokens=48, seed=1, progress=False)
    assert dropped_rows
    assert all("Paris" in a for a in answers[0]) and all("dragon" in a.lower() for a in answers[1])
    assert min(len(a.split()) for a in answers[1]) > max(len(a.split()) for a in answers[0][:2])


def test_score_options_picks_the_greedy_first_token(smollm2):
    model, tok = smollm2
    convs = [Conversation.user(q + " Answer Yes or No.") for q in
             ("Is fire hot?", "Is ice hot?", "Is the sea salty?", "Can fish fly to the moon?")]
    picks = score_options(model, tok, convs, ["Yes", "No"])
    first_tokens = generate(model, tok, convs, GenerationSettings(max_new_tokens=1, batch_size=4), progress=False)
    expected = [0 if t.startswith("Yes") else 1 if t.startswith("No") else None for t in first_tokens]
    for pick, exp in zip(picks, expected):
        if exp is not None:
            assert pick == exp


def test_greedy_refuses_several_samples(smollm2):
    model, tok = smollm2
    with pytest.raises(ValueError, match="temperature"):
        generate(model, tok, [Conversation.user("hi")], GenerationSettings(num_samples=2), progress=False)


def test_score_options_ties_go_to_the_lowest_token_id_whatever_the_order(smollm2):
    model, tok = smollm2

    class Tied(torch.nn.Module):
        """Wraps the model so every logit is equal: a perfect tie between the options."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kw):
            out = self.inner(**kw)
            out.logits = torch.zeros_like(out.logits)
            return out

    conv = [Conversation.user("Yes or no?")]
    yes, no = tok("Yes", add_special_tokens=False)["input_ids"][0], tok("No", add_special_tokens=False)["input_ids"][0]
    lowest = "Yes" if yes < no else "No"
    for options in (["Yes", "No"], ["No", "Yes"]):
        pick = score_options(Tied(model), tok, conv, options)[0]
        assert options[pick] == lowest


def test_a_shared_prompt_prefix_gives_the_logits_of_whole_prompts(untrained_llava):
    """Conversations about the same image run their common prefix (system prompt, image, shared words) once; the
    answer-position logits must equal those of each whole prompt, for groups split over several batches, a
    conversation alone with its image, and suffixes of different lengths."""
    from PIL import Image

    model, processor = untrained_llava
    red, blue, green = (Image.new("RGB", (96, 96), c) for c in ("red", "blue", "green"))
    convs = [Conversation.user(q, red) for q in ("Is there a circle?", "Is there a red star in the corner?",
                                                 "Is there a square?")]
    convs += [Conversation.user(q, blue.copy()) for q in ("Is there a circle?", "How many shapes are there?")]
    convs += [Conversation.user("Is there a circle?", green)]
    tokens = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: tokens.append(kw["input_ids"].numel()), with_kwargs=True)
    try:
        shared = {i: row for idx, logits in answer_logits(model, processor, convs, batch_size=2)
                  for i, row in zip(idx, logits)}
        shared_tokens, tokens[:] = sum(tokens), []
        whole = {i: row for idx, logits in answer_logits(model, processor, convs, batch_size=2, share_prefix=False)
                 for i, row in zip(idx, logits)}
    finally:
        hook.remove()
    assert sorted(shared) == sorted(whole) == list(range(len(convs)))
    for i in range(len(convs)):
        assert torch.allclose(shared[i], whole[i], atol=1e-4), i
    assert shared_tokens < 0.7 * sum(tokens)  # the prefix really ran once per image


def test_a_shared_prefix_processes_each_image_once(untrained_llava, monkeypatch):
    """The pixel values of a group's prefix come from the encoding that gave the token ids, not from a second
    pass of the image processor."""
    from PIL import Image

    model, processor = untrained_llava
    red, blue = Image.new("RGB", (96, 96), "red"), Image.new("RGB", (96, 96), "blue")
    convs = [Conversation.user(q, img) for img in (red, blue) for q in ("Is there a circle?", "Is there a star?")]
    seen = []
    image_processor = type(processor.image_processor)
    original = image_processor.__call__
    monkeypatch.setattr(image_processor, "__call__",
                        lambda self, images, *a, **kw: seen.append(len(images)) or original(self, images, *a, **kw))
    list(answer_logits(model, processor, convs, batch_size=2))
    assert sum(seen) == len(convs)


def test_image_inputs_are_split_per_conversation_only_when_laid_out_per_image():
    from PIL import Image

    img = Image.new("RGB", (8, 8))
    convs = [Conversation.user("a", img), Conversation.user("b"), Conversation.user("c", img)]
    pixels = torch.arange(2 * 3).reshape(2, 3)
    parts = _split_by_conversation({"input_ids": torch.zeros(3, 4), "attention_mask": torch.ones(3, 4),
                                    "pixel_values": pixels}, convs)
    assert [p["pixel_values"].tolist() for p in parts] == [[[0, 1, 2]], [], [[3, 4, 5]]]
    # one row per image patch (as some processors lay them out): no split, the caller encodes again
    assert _split_by_conversation({"input_ids": torch.zeros(3, 4), "pixel_values": torch.zeros(7, 3)}, convs) is None


def test_option_scoring_with_and_without_a_shared_prefix_agree(smollm2):
    model, tok = smollm2
    convs = [Conversation.user(q + " Answer Yes or No.") for q in
             ("Is fire hot?", "Is ice hot?", "Is the sea salty?", "Can fish fly to the moon?", "Is snow white?")]
    assert score_options(model, tok, convs, ["Yes", "No"], batch_size=2) == \
        score_options(model, tok, convs, ["Yes", "No"], batch_size=2, share_prefix=False)


def test_common_prefix_leaves_each_row_a_token_and_must_hold_the_images():
    t = torch.tensor
    assert _common_prefix_length([t([1, 2, 3, 4]), t([1, 2, 5]), t([1, 2, 3, 9, 9])]) == 2
    assert _common_prefix_length([t([1, 2, 3]), t([1, 2, 3])]) == 2  # the same prompt twice: one token each
    assert _common_prefix_length([t([7, 2]), t([1, 2])]) == 0
    image = 99
    assert _prefix_can_be_shared(t([1, 99, 99, 5, 6]), 3, image)  # prefix 1, 99, 99 holds both image tokens
    assert not _prefix_can_be_shared(t([1, 99, 99, 5, 6]), 2, image)  # would cut the image
    assert not _prefix_can_be_shared(t([1, 2, 3]), 0, None)  # nothing shared: run whole
    assert _prefix_can_be_shared(t([1, 2, 3]), 1, None)
