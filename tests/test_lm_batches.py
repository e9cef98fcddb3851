"""Training batches: images expand to the model's image tokens, labels cover exactly the assistant replies."""
import random

import pytest
import torch
from PIL import Image

from mmalign_utils.train.lm_batches import (ChatExample, PlainCaption, answer_only_loss, collate, image_tokens_per_image,
                                           length_grouped_batches, tokenize_example)


def _example():
    img = Image.new("RGB", (96, 96), "red")
    return ChatExample([
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": "Sure?"},
        {"role": "assistant", "content": "Yes."},
    ], [img])


def test_image_expands_to_nine_tokens_and_labels_are_the_replies(untrained_llava):
    model, processor = untrained_llava
    assert image_tokens_per_image(processor) == 9  # 96 px / patch 32 = 3 x 3
    ids, labels = tokenize_example(processor, _example())
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    assert sum(1 for t in ids if t == image_id) == 9
    trained = processor.tokenizer.decode([t for t, lab in zip(ids, labels) if lab != -100])
    assert trained == "Red.<|im_end|>Yes.<|im_end|>"


def test_image_count_mismatch_is_an_error(untrained_llava):
    _, processor = untrained_llava
    ex = _example()
    ex.images = []
    with pytest.raises(ValueError, match="1 <image> parts but 0 images"):
        tokenize_example(processor, ex)


def test_collate_pads_right_and_loss_matches_full_logits(untrained_llava):
    model, processor = untrained_llava
    short = ChatExample([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]},
                         {"role": "assistant", "content": "Blue square."}], [Image.new("RGB", (96, 96), "blue")])
    batch = collate(processor, [_example(), short])
    assert batch["pixel_values"].shape == (2, 3, 96, 96)
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()
    with torch.no_grad():
        ours = answer_only_loss(model, batch)
        # The plain way: full logits, HF's shifted cross-entropy over labels.
        ref = model(**batch).loss
    assert torch.allclose(ours, ref, atol=1e-4)


def test_plain_caption_is_image_then_caption_with_loss_on_the_caption_only(untrained_llava):
    _, processor = untrained_llava
    tok = processor.tokenizer
    ids, labels = tokenize_example(processor, PlainCaption("There is a red circle.", Image.new("RGB", (96, 96))))
    image_id = tok.convert_tokens_to_ids(processor.image_token)
    assert ids[0] == tok.bos_token_id and ids[1:10] == [image_id] * 9 and labels[:10] == [-100] * 10
    # No chat template: nothing between the image and the caption, and the caption ends with the EOS token.
    assert tok.decode(ids[10:]) == "There is a red circle." + tok.eos_token
    assert labels[10:] == ids[10:]
    batch = collate(processor, [PlainCaption("A.", Image.new("RGB", (96, 96))),
                                PlainCaption("A blue star.", Image.new("RGB", (96, 96)))])
    assert batch["pixel_values"].shape[0] == 2


def test_length_grouped_batches_cover_an_epoch_and_cut_padding():
    rng = random.Random(0)
    lengths = [random.Random(i).randint(20, 400) for i in range(256)]
    batches = length_grouped_batches(lengths, 8, rng)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(256))  # every example exactly once per epoch
    assert all(len(b) == 8 for b in batches)

    def padding(bs):  # padded tokens / real tokens
        return sum(len(b) * max(lengths[i] for i in b) for b in bs) / sum(lengths) - 1

    random_order = list(range(256))
    random.Random(1).shuffle(random_order)
    random_batches = [random_order[i:i + 8] for i in range(0, 256, 8)]
    assert padding(batches) < 0.1 < padding(random_batches)
    # The batch order is shuffled: lengths do not descend over the epoch.
    firsts = [lengths[b[0]] for b in batches]
    assert firsts != sorted(firsts, reverse=True)
