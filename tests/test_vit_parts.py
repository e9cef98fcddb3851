"""Parts of the toy VIT that decide whether the LLaVA can see: the projector's word-embedding start."""
import copy

import numpy as np
import pytest
import torch

from mmalign_utils.train.vision_pretrain import ProjectorInitConfig, cell_word_targets, init_projector_from_words
from mmalign_utils.world import vocab


def test_cell_targets_are_the_scaled_mean_embedding_of_the_cell_words(untrained_llava):
    model, processor = untrained_llava
    embed = model.model.language_model.get_input_embeddings().weight.detach().float()
    targets = cell_word_targets(embed, processor.tokenizer)
    assert targets.shape == (1 + len(vocab.COLORS) * len(vocab.SHAPES) * len(vocab.SIZES), embed.shape[1])
    ids = processor.tokenizer(" large red circle", add_special_tokens=False)["input_ids"]
    by_hand = embed[ids].mean(0)
    row = targets[vocab.class_index("red", "circle", "large")]
    assert torch.allclose(row / row.norm(), by_hand / by_hand.norm(), atol=1e-5)
    assert torch.allclose(targets.norm(dim=-1), embed.norm(dim=-1).mean().expand(len(targets)), rtol=1e-4)
    empty = processor.tokenizer(" empty", add_special_tokens=False)["input_ids"]
    assert torch.allclose(targets[0] / targets[0].norm(), embed[empty].mean(0) / embed[empty].mean(0).norm(),
                          atol=1e-5)


def test_projector_init_fits_better_than_the_mean_and_touches_only_the_projector(untrained_llava):
    model, processor = untrained_llava
    model = copy.deepcopy(model)
    tower_before = {k: v.clone() for k, v in model.model.vision_tower.state_dict().items()}
    lm_before = model.model.language_model.layers[0].mlp.up_proj.weight.clone()
    proj_before = model.model.multi_modal_projector.linear_1.weight.clone()
    metrics = init_projector_from_words(model, processor.tokenizer, ProjectorInitConfig(n_scenes=100, steps=40))
    assert metrics["relative_mse"] < 0.9  # 1.0 is what always predicting the mean target scores
    assert not torch.equal(model.model.multi_modal_projector.linear_1.weight, proj_before)
    assert all(torch.equal(v, tower_before[k]) for k, v in model.model.vision_tower.state_dict().items())
    assert torch.equal(model.model.language_model.layers[0].mlp.up_proj.weight, lm_before)


def test_patch_labels_and_slots_follow_the_raster_order_of_a_6x6_patch_grid():
    from mmalign_utils.train.vision_pretrain import patch_labels, patch_slots

    cells = np.arange(9).reshape(1, 9)  # cell c holds class c
    grid = patch_labels(cells, 2).reshape(6, 6)
    # by hand: patch (r, c) lies in cell (r // 2) * 3 + c // 2
    assert grid[0].tolist() == [0, 0, 1, 1, 2, 2]
    assert grid[1].tolist() == [0, 0, 1, 1, 2, 2]
    assert grid[2].tolist() == [3, 3, 4, 4, 5, 5]
    assert grid[5].tolist() == [6, 6, 7, 7, 8, 8]
    slots = patch_slots(2).reshape(6, 6)
    assert slots[0].tolist() == [0, 1, 0, 1, 0, 1]
    assert slots[1].tolist() == [2, 3, 2, 3, 2, 3]
    assert patch_labels(cells, 1).tolist() == cells.tolist() and patch_slots(1).tolist() == [0] * 9


def test_patch_word_targets_name_one_attribute_per_patch(untrained_llava):
    from mmalign_utils.train.vision_pretrain import patch_word_targets

    model, processor = untrained_llava
    embed = model.model.language_model.get_input_embeddings().weight.detach().float()
    tok = processor.tokenizer

    def word(w):
        return embed[tok(w, add_special_tokens=False)["input_ids"]].mean(0)

    targets = patch_word_targets(embed, tok, 2)
    assert targets.shape == (vocab.NUM_CLASSES, 4, embed.shape[1])
    row = targets[vocab.class_index("red", "circle", "large")]
    # top-left colour, top-right shape, bottom-left size, bottom-right colour again
    for slot, w in enumerate([" red", " circle", " large", " red"]):
        assert torch.allclose(row[slot], word(w))
    assert all(torch.allclose(targets[0, s], word(" empty")) for s in range(4))
    assert torch.allclose(patch_word_targets(embed, tok, 1)[:, 0], cell_word_targets(embed, tok))


def test_patch_grid_must_tile_the_world_grid():
    from types import SimpleNamespace

    from mmalign_utils.train.vision_pretrain import patches_per_cell_side

    assert patches_per_cell_side(SimpleNamespace(config=SimpleNamespace(image_size=96, patch_size=16))) == 2
    with pytest.raises(ValueError, match="does not tile"):
        patches_per_cell_side(SimpleNamespace(config=SimpleNamespace(image_size=64, patch_size=16)))


def test_projector_init_with_four_patches_per_cell():
    from mmalign_utils.models import ToyMLLMConfig, build_toy_mllm

    model, processor = build_toy_mllm(ToyMLLMConfig(patch_size=16))
    metrics = init_projector_from_words(model, processor.tokenizer, ProjectorInitConfig(n_scenes=60, steps=40))
    assert metrics["relative_mse"] < 0.9
    assert 0.0 <= metrics["nearest_word_accuracy"] <= 1.0


def test_grounded_caption_names_every_object_and_place_in_reading_order():
    from mmalign_utils.train.vit import caption
    from mmalign_utils.world.scenes import Scene, SceneObject

    # given bottom first: the caption still reads top left first
    scene = Scene(objects=(SceneObject("star", "blue", "small", 2, 1), SceneObject("circle", "red", "large", 0, 0)),
                  seed=0)
    assert caption(scene, "shapes") == ("There is a large red circle in the top left corner and "
                                        "a small blue star at the bottom center.")


def test_grounded_caption_turn_opens_the_share_of_short_conversations_asked_for():
    import random

    from mmalign_utils.train import vit

    images = vit.make_images(40, 0.0, 3, 96)
    cfg = vit.VITConfig(longform_share=0.0, text_only_share=0.0, grounded_caption_share=0.5)
    examples = vit.stage2_examples(vit.stage2_plan(images, cfg, random.Random(0)), {})
    opened = [ex for ex in examples if ex.messages[0]["content"][1]["text"] in vit.GROUNDED_PROMPTS]
    assert 8 <= len(opened) <= 32  # Binomial(40, 0.5)
    for ex in opened:
        scene = next(im.source for im in images if im.image is ex.images[0])
        assert ex.messages[1]["content"] == vit.caption(scene, "shapes")
        # the image is given once, with the first turn only
        assert all(isinstance(m["content"], str) for m in ex.messages[2::2])
    none = vit.stage2_examples(vit.stage2_plan(images, vit.VITConfig(longform_share=0.0, text_only_share=0.0), random.Random(0)), {})
    assert not any(isinstance(ex.messages[0]["content"], list)
                   and ex.messages[0]["content"][1]["text"] in vit.GROUNDED_PROMPTS for ex in none)


def test_full_lm_stage2_trains_every_lm_weight_and_not_the_tower(untrained_llava):
    import random

    from mmalign_utils.train import vit

    model, processor = copy.deepcopy(untrained_llava[0]), untrained_llava[1]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = vit.VITConfig(longform_share=0.0, text_only_share=0.0, turns_per_short_example=(1, 2), stage2_lm="full", stage2_steps=2,
                        stage2_batch_size=2, stage2_lr_full=1e-3)
    images = vit.make_images(4, 0.0, 0, 96)
    examples = vit.stage2_examples(vit.stage2_plan(images, cfg, random.Random(0)), {})
    trained, losses = vit.run_stage2(model, processor, examples, cfg, progress=False)
    assert len(losses) == 2 and type(trained) is type(untrained_llava[0])
    after = dict(trained.named_parameters())
    lm = [n for n in before if ".language_model." in n]
    assert lm and all(not torch.equal(before[n], after[n].float()) for n in lm if n.endswith("q_proj.weight"))
    assert all(torch.equal(before[n], after[n]) for n in before if ".vision_tower." in n)
    assert not any(p.requires_grad for p in trained.parameters())
    with pytest.raises(ValueError, match="stage2_lm"):
        vit.run_stage2(trained, processor, examples, vit.VITConfig(stage2_lm="qlora"), progress=False)


class _Crash(Exception):
    pass


def test_stage2_resumed_from_a_checkpoint_ends_where_an_uninterrupted_run_ends(tmp_path):
    """A crash after step 3 of 4, with checkpoints every 2 steps: the rerun goes back to step 2, replays the
    same batch and schedule, and finishes with the same weights, losses and along-the-way records."""
    import random

    from mmalign_utils.train import vit
    from mmalign_utils.train.checkpoint import LoopCheckpoint
    from mmalign_utils.train.tiny import build_tiny_llava

    untrained_llava = build_tiny_llava()
    untrained_llava[1].tokenizer.chat_template = untrained_llava[1].chat_template  # as build_toy_mllm sets it

    cfg = vit.VITConfig(longform_share=0.0, text_only_share=0.0, charts_share=0.0, turns_per_short_example=(1, 2),
                        stage2_steps=4,
                        stage2_batch_size=2, lora_r=4, lora_alpha=8, stage2_lr_lora=1e-2)
    images = vit.make_images(6, 0.0, 0, 96)
    examples = vit.stage2_examples(vit.stage2_plan(images, cfg, random.Random(0)), {})

    def record_each_step(step, model, losses):
        return {"step": step, "loss": losses[-1]}

    def run(ckpt_folder, crash_at=None):
        torch.manual_seed(0)
        model = copy.deepcopy(untrained_llava[0])

        def on_step(step, m, losses):
            if step == crash_at:
                raise _Crash
            return record_each_step(step, m, losses)

        records: list[dict] = []
        ckpt = LoopCheckpoint(ckpt_folder, every=2) if ckpt_folder else None
        merged, losses = vit.run_stage2(model, untrained_llava[1], examples, cfg, progress=False, on_step=on_step,
                                        checkpoint=ckpt, records=records)
        return merged, losses, records

    ref_model, ref_losses, ref_records = run(None)
    with pytest.raises(_Crash):
        run(tmp_path / "ckpt", crash_at=3)
    assert LoopCheckpoint(tmp_path / "ckpt").exists()
    model, losses, records = run(tmp_path / "ckpt")
    assert losses == pytest.approx(ref_losses, rel=1e-5) and len(losses) == 4
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    ref_params = dict(ref_model.named_parameters())
    lm = [n for n, _ in model.named_parameters() if ".language_model." in n and n.endswith("q_proj.weight")]
    assert lm and all(torch.allclose(p, ref_params[n], atol=1e-6)
                      for n, p in model.named_parameters())
    # the merged LoRA moved the weights: the comparison above is not between two untouched models
    base = dict(untrained_llava[0].named_parameters())
    assert not torch.equal(ref_params[lm[0]].float(), base[lm[0]].float())


def test_a_checkpoint_from_another_configuration_is_refused_by_name(tmp_path):
    import random

    from mmalign_utils.train import vit
    from mmalign_utils.train.checkpoint import LoopCheckpoint
    from mmalign_utils.train.tiny import build_tiny_llava

    untrained_llava = build_tiny_llava()
    untrained_llava[1].tokenizer.chat_template = untrained_llava[1].chat_template  # as build_toy_mllm sets it

    images = vit.make_images(4, 0.0, 0, 96)
    base = dict(longform_share=0.0, text_only_share=0.0, turns_per_short_example=(1, 1), stage2_steps=2,
                stage2_batch_size=2)
    examples = vit.stage2_examples(vit.stage2_plan(images, vit.VITConfig(**base), random.Random(0)), {})
    ckpt = LoopCheckpoint(tmp_path / "ckpt", every=1)
    vit.run_stage2(copy.deepcopy(untrained_llava[0]), untrained_llava[1], examples,
                   vit.VITConfig(**base, stage2_lm="full"), progress=False, checkpoint=ckpt)
    with pytest.raises(RuntimeError, match="delete the folder"):
        vit.run_stage2(copy.deepcopy(untrained_llava[0]), untrained_llava[1], examples,
                       vit.VITConfig(**base, lora_r=4), progress=False, checkpoint=ckpt)


def test_a_checkpoint_survives_a_crash_between_removing_the_old_one_and_renaming_the_new(tmp_path):
    import random

    from mmalign_utils.train.checkpoint import LoopCheckpoint

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    ckpt = LoopCheckpoint(tmp_path / "ckpt", every=1)
    ckpt.save(model, opt, sched, random.Random(1), [[0, 1]], [0.5], [{"step": 1}])
    # the state save() leaves if it dies after rmtree(folder) and before the rename
    (tmp_path / "ckpt").rename(tmp_path / "ckpt.saving")
    assert ckpt.exists()
    fresh = torch.nn.Linear(3, 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    queue, losses, records = ckpt.load(fresh, fresh_opt, torch.optim.lr_scheduler.LambdaLR(fresh_opt, lambda s: 1.0),
                                       random.Random(0))
    assert (queue, losses, records) == ([[0, 1]], [0.5], [{"step": 1}])
    assert torch.equal(fresh.weight, model.weight)
    assert (tmp_path / "ckpt" / "loop.json").exists() and not (tmp_path / "ckpt.saving").exists()
