"""Cached reference log-probs and pair batches: TRL's collation reproduced exactly, log-probs equal a plain
forward, the cached-reference DPO loss equals plain TRL's live LoRA reference step by step, the cache is reused
and keyed by model and row, and the reference-drift trap of a projector trained outside PEFT."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

from mmalign_utils import preference
from mmalign_utils.formats import trl_preference_view
from mmalign_utils.train import ref_cache
from mmalign_utils.train.dpo import AlignDPOTrainer, build_dpo_trainer, dpo_config, prepare_dpo_dataset
from mmalign_utils.train.pair_batches import PairCollator, pair_sequence_logps
from mmalign_utils.train.peft_setup import ProjectorLRMixin, build_lora_config
from mmalign_utils.train.recipes import default_recipe, smoke_settings
from mmalign_utils.train.ref_cache import RefSettings, attach_reference_logps, row_fingerprint
from mmalign_utils.train.tiny import build_tiny_llava, synthetic_prompts


@pytest.fixture(scope="module")
def pairs():
    return trl_preference_view(preference.build_dpo_pairs(synthetic_prompts(6, long_words=30)))


@pytest.fixture(scope="module")
def short_pairs():
    """Shorter answers for the training tests (speed)."""
    return trl_preference_view(preference.build_dpo_pairs(synthetic_prompts(6, long_words=6)))


def plain_logps(model, batch):
    """Summed answer log-probs from the model's ordinary forward over a TRL batch (full logits, fp32)."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       pixel_values=batch["pixel_values"]).logits
    token_logps = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    return (token_logps * batch["completion_mask"][:, 1:]).sum(1)


@pytest.mark.parametrize("max_length", [None, 60])
def test_pair_collator_reproduces_trls_vision_collator(pairs, max_length):
    _, processor = build_tiny_llava()
    rows = [pairs[i] for i in range(4)]
    trl_batch = DataCollatorForVisionPreference(processor, max_length=max_length)([dict(r) for r in rows])
    ours = PairCollator(processor, max_length=max_length)(rows)
    for key in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(trl_batch[key], ours[key]), key
    # TRL repeats the 4 images for the rejected rows; we keep them once
    assert torch.equal(trl_batch["pixel_values"], torch.cat([ours["pair_pixel_values"]] * 2))
    if max_length is not None:
        assert trl_batch["input_ids"].shape[1] == max_length  # truncation actually happened


def test_pair_collator_refuses_a_prompt_longer_than_max_length(pairs):
    _, processor = build_tiny_llava()
    with pytest.raises(ValueError, match="max_length=20"):
        PairCollator(processor, max_length=20)([pairs[0]])


@pytest.mark.parametrize("shared_prefix", [True, False])
def test_pair_logps_equal_the_ordinary_forward(pairs, shared_prefix):
    model, processor = build_tiny_llava()
    rows = [pairs[i] for i in range(4)]
    expected = plain_logps(model, DataCollatorForVisionPreference(processor)([dict(r) for r in rows]))
    chosen, rejected = pair_sequence_logps(model, PairCollator(processor)(rows), shared_prefix=shared_prefix)
    assert torch.allclose(torch.cat([chosen, rejected]), expected, atol=1e-4, rtol=0)
    assert (chosen - rejected).abs().min() > 1e-2  # the pairs really differ


class PlainTRLTrainer(ProjectorLRMixin, DPOTrainer):
    """TRL's own DPOTrainer (its collator, its live LoRA reference), with the same optimiser groups as ours."""

    def __init__(self, *args, projector_learning_rate=None, **kwargs):
        self.projector_learning_rate = projector_learning_rate
        super().__init__(*args, **kwargs)


def tiny_dpo_recipe(tmp_path, **dpo):
    recipe = smoke_settings(default_recipe("dpo", "toy"))
    recipe = dataclasses.replace(recipe, output_dir=str(tmp_path), smoke=False, save_steps=1000,
                                 max_train_samples=None)
    recipe.lora = dataclasses.replace(recipe.lora, r=4, alpha=8, dropout=0.0)
    recipe.optim = dataclasses.replace(recipe.optim, learning_rate=2e-2, projector_learning_rate=5e-3, max_steps=3)
    recipe.hardware = dataclasses.replace(recipe.hardware, precision="fp32")
    recipe.dpo = dataclasses.replace(recipe.dpo, **dpo)
    return recipe


def step_metrics(trainer):
    return [(h["loss"], h["rewards/margins"], h["rewards/chosen"]) for h in trainer.state.log_history if "loss" in h]


@pytest.mark.parametrize("reference,shared_prefix,checkpointing", [
    ("cached", True, False), ("cached", False, False), ("lora", True, False),
    ("cached", True, True),  # activation checkpointing drops caches: the image-once path must take over
])
def test_dpo_loss_equals_plain_trl_with_live_lora_reference(tmp_path, short_pairs, reference, shared_prefix,
                                                            checkpointing):
    pairs = short_pairs
    recipe = tiny_dpo_recipe(tmp_path / "ours", reference=reference, shared_prefix=shared_prefix)

    model, processor = build_tiny_llava()
    plain = PlainTRLTrainer(model=model, args=dpo_config(dataclasses.replace(recipe, output_dir=str(tmp_path / "trl")),
                                                         disable_tqdm=True),
                            train_dataset=pairs, processing_class=processor,
                            peft_config=build_lora_config(model, recipe),
                            projector_learning_rate=recipe.optim.projector_learning_rate)
    plain.train()

    model2, processor2 = build_tiny_llava()
    data = prepare_dpo_dataset(recipe, pairs, model2, processor2, progress=False)
    recipe.hardware = dataclasses.replace(recipe.hardware, gradient_checkpointing=checkpointing)
    ours = build_dpo_trainer(recipe, model2, processor2, data, disable_tqdm=True)
    assert ours.ref_model is None and ours.precompute_ref_logps == (reference == "cached")
    ours.train()
    assert ours.model.get_base_model().is_activation_checkpointing is checkpointing

    expected, got = step_metrics(plain), step_metrics(ours)
    assert len(expected) == len(got) == 3
    assert expected[0][0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1
    assert abs(expected[-1][0] - 0.6931) > 1e-2  # the policy moved away afterwards: the comparison is not trivial
    for (loss_a, margin_a, chosen_a), (loss_b, margin_b, chosen_b) in zip(expected, got):
        assert loss_b == pytest.approx(loss_a, abs=1e-4)
        assert margin_b == pytest.approx(margin_a, abs=1e-4)
        assert chosen_b == pytest.approx(chosen_a, abs=1e-4)


def test_cache_is_reused_extended_and_keyed_by_model(tmp_path, pairs, monkeypatch):
    model, processor = build_tiny_llava()
    settings = RefSettings(compute_dtype="fp32")
    first = attach_reference_logps(pairs.select(range(3)), model, processor, tmp_path, settings, progress=False)
    assert len(list(tmp_path.glob("ref_logps-*.parquet"))) == 1

    computed_rows = []
    real = ref_cache.compute_reference_logps

    def counting(model, processor, rows, *args, **kwargs):
        computed_rows.append(len(rows))
        return real(model, processor, rows, *args, **kwargs)

    monkeypatch.setattr(ref_cache, "compute_reference_logps", counting)
    again = attach_reference_logps(pairs.select(range(3)), model, processor, tmp_path, settings, progress=False)
    assert computed_rows == []  # everything came from the file
    assert again["ref_chosen_logps"] == first["ref_chosen_logps"]
    full = attach_reference_logps(pairs, model, processor, tmp_path, settings, progress=False)
    assert computed_rows == [len(pairs) - 3]  # only the new rows
    assert full["ref_rejected_logps"][:3] == first["ref_rejected_logps"]

    # the stored values are the model's own summed log-probs
    batch = DataCollatorForVisionPreference(processor)([dict(pairs[i]) for i in range(2)])
    expected = plain_logps(model, batch)
    assert torch.allclose(torch.tensor(full["ref_chosen_logps"][:2]), expected[:2], atol=1e-4)
    assert torch.allclose(torch.tensor(full["ref_rejected_logps"][:2]), expected[2:], atol=1e-4)

    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1.0  # another model: another cache file
    attach_reference_logps(pairs.select(range(1)), model, processor, tmp_path, settings, progress=False)
    assert len(list(tmp_path.glob("ref_logps-*.parquet"))) == 2


def test_row_fingerprint_follows_text_and_pixels(pairs):
    from PIL import Image

    row = dict(pairs[0])
    assert row_fingerprint(row) == row_fingerprint(dict(pairs[0]))
    other_answer = {**row, "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "Blue."}]}]}
    other_image = {**row, "images": [Image.new("RGB", row["images"][0].size, (1, 2, 3))]}
    assert len({row_fingerprint(row), row_fingerprint(other_answer), row_fingerprint(other_image)}) == 3


def test_reference_columns_are_required(tmp_path, pairs):
    model, processor = build_tiny_llava()
    recipe = tiny_dpo_recipe(tmp_path)
    with pytest.raises(ValueError, match="ref_chosen_logps"):
        AlignDPOTrainer(model=model, args=dpo_config(recipe), train_dataset=pairs, processing_class=processor,
                        peft_config=build_lora_config(model, recipe), reference="dataset")


@pytest.mark.parametrize("projector,drifts", [("modules_to_save", False), ("outside", True)])
def test_adapter_off_reference_drifts_only_with_a_projector_outside_peft(tmp_path, short_pairs, projector, drifts):
    """The trap of trl-and-stack.md §5: the adapter-off pass of a live LoRA reference uses whatever projector the
    model has. With modules_to_save it is the original one; outside PEFT it is the one being trained."""
    pairs = short_pairs
    recipe = tiny_dpo_recipe(tmp_path)
    recipe.lora = dataclasses.replace(recipe.lora, projector=projector)
    model, processor = build_tiny_llava()
    data = prepare_dpo_dataset(recipe, pairs, model, processor, progress=False)
    trainer = build_dpo_trainer(recipe, model, processor, data, disable_tqdm=True)
    trainer.train()
    peft_model = trainer.model.eval()
    batch = PairCollator(processor)([pairs[i] for i in range(len(pairs))])
    with peft_model.disable_adapter():
        chosen, _ = pair_sequence_logps(peft_model.get_base_model(), batch)
    start = torch.tensor(data["ref_chosen_logps"])
    assert (not torch.allclose(chosen, start, atol=1e-4)) == drifts
