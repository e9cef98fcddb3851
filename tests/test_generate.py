"""The generation engine: batching must not change greedy answers, shared-prefix sampling must decode the same
tokens as HF generate when it is made greedy, and option scoring must pick what greedy decoding starts with."""
import torch

from mmalign_utils.generate import Conversation, GenerationSettings, generate, sample_k, score_options

QUESTIONS = ["What is the capital of France?", "Name a colour of the sky.", "Is fire hot? Answer yes or no.",
             "Write one word that rhymes with cat."]


def test_batched_greedy_equals_one_at_a_time(smollm2):
    model, tok = smollm2
    convs = [Conversation.user(q) for q in QUESTIONS]
    batched = generate(model, tok, convs, GenerationSettings(max_new_tokens=12, batch_size=4), progress=False)
    single = [generate(model, tok, [c], GenerationSettings(max_new_tokens=12), progress=False)[0] for c in convs]
    assert batched == single
    assert "Paris" in batched[0]


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
    import pytest

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
