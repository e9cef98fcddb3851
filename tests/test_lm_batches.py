"""Training batches: images expand to the model's image tokens, labels cover exactly the assistant replies."""
import pytest
import torch
from PIL import Image

from mmalign_utils.train.lm_batches import ChatExample, answer_only_loss, collate, image_tokens_per_image, tokenize_example


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
