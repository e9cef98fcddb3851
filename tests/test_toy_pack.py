"""Packing a toy LLaVA build as its trained parts and unpacking it exactly (mmalign_utils/train/toy_pack.py), on a
fake build: the starting model with a perturbed tower and projector and random LoRA factors, merged and saved the
way build_toy_llava saves its model."""
from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from peft import get_peft_model

from mmalign_utils.models import build_toy_mllm, save_mllm
from mmalign_utils.train import toy_pack, vit


@pytest.fixture(scope="module")
def fake_build(tmp_path_factory):
    cfg = vit.VITConfig.smoke()
    cfg.lora_r, cfg.lora_alpha, cfg.bf16_frozen_lm = 4, 8, True
    root = tmp_path_factory.mktemp("build")
    model, processor = build_toy_mllm(cfg.model)
    vit.store_frozen_lm_in_bf16(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in list(model.model.vision_tower.parameters()) + list(model.model.multi_modal_projector.parameters()):
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    peft_model = get_peft_model(model, vit.stage2_lora_config(cfg))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    lora = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_" in n}
    merged = vit.merge_stage2_lora(peft_model)
    save_mllm(merged.to(torch.bfloat16), processor, root / "model")
    vit.save_stage2_lora(root / "lora", lora, cfg)
    (root / "build_config.json").write_text(json.dumps(asdict(cfg)))
    (root / "report.json").write_text(json.dumps({"vqa": {"accuracy_shapes": 0.5}}))
    return root, cfg


def test_pack_and_unpack_reproduce_the_saved_model_tensor_for_tensor(fake_build, tmp_path):
    build, cfg = fake_build
    pack = toy_pack.pack_toy_llava(build, tmp_path / "pack")
    # the tower and the projector are packed as tensors; the language model only as LoRA factors and the
    # embedding row it adds for <image> (the last row)
    assert pack["trained_tensors"] and all("vision_tower" in n or "multi_modal_projector" in n
                                           for n in pack["trained_tensors"] if n != toy_pack.ADDED_ROWS_KEY)
    assert toy_pack.ADDED_ROWS_KEY in pack["trained_tensors"]
    config = json.loads((build / "model" / "config.json").read_text())
    assert pack["added_embedding_rows_from"] == config["image_token_index"] == config["text_config"]["vocab_size"] - 1
    packed_mb = sum(f.stat().st_size for f in (tmp_path / "pack").rglob("*") if f.is_file()) / 2**20
    assert packed_mb < (build / "model" / "model.safetensors").stat().st_size / 2**20 / 3
    out = toy_pack.unpack_toy_llava(tmp_path / "pack", tmp_path / "unpacked")
    assert toy_pack.tensor_digests(out / "model" / "model.safetensors") == \
        toy_pack.tensor_digests(build / "model" / "model.safetensors")
    assert json.loads((out / "report.json").read_text()) == {"vqa": {"accuracy_shapes": 0.5}}
    assert (out / "model" / "tokenizer.json").read_bytes() == (build / "model" / "tokenizer.json").read_bytes()
    # a pack answers only for the configuration it was built with (bf16_frozen_lm aside)
    assert toy_pack.pack_matches(tmp_path / "pack", asdict(cfg))
    other = vit.VITConfig.smoke()
    assert not toy_pack.pack_matches(tmp_path / "pack", asdict(other))  # lora_r 32, not 4


def test_unpacking_a_damaged_pack_names_the_tensors_that_differ(fake_build, tmp_path):
    from safetensors.torch import load_file, save_file

    build, _ = fake_build
    toy_pack.pack_toy_llava(build, tmp_path / "pack")
    adapter = load_file(str(tmp_path / "pack" / "adapter.safetensors"))
    first = sorted(adapter)[0]
    adapter[first] = adapter[first] + 1.0
    save_file(adapter, str(tmp_path / "pack" / "adapter.safetensors"))
    with pytest.raises(RuntimeError, match="tensors differ from the build's saved model"):
        toy_pack.unpack_toy_llava(tmp_path / "pack", tmp_path / "unpacked")
    # the <image> embedding row comes from the pack, not from the rebuilt model's mean over the vocabulary
    toy_pack.pack_toy_llava(build, tmp_path / "pack2")
    trained = load_file(str(tmp_path / "pack2" / "trained.safetensors"))
    trained[toy_pack.ADDED_ROWS_KEY] = trained[toy_pack.ADDED_ROWS_KEY] * 2
    save_file(trained, str(tmp_path / "pack2" / "trained.safetensors"))
    with pytest.raises(RuntimeError, match="embed_tokens"):
        toy_pack.unpack_toy_llava(tmp_path / "pack2", tmp_path / "unpacked2")


def test_a_build_without_lora_factors_cannot_be_packed(fake_build, tmp_path):
    import shutil

    build, _ = fake_build
    copy = tmp_path / "old_build"
    shutil.copytree(build, copy)
    shutil.rmtree(copy / "lora")
    with pytest.raises(FileNotFoundError, match="lora"):
        toy_pack.pack_toy_llava(copy, tmp_path / "pack")


def test_ensure_toy_llava_unpacks_a_matching_pack_instead_of_building(fake_build, tmp_path, monkeypatch, capsys):
    from mmalign_utils.config import RunContext

    build, cfg = fake_build
    toy_pack.pack_toy_llava(build, tmp_path / "pack")
    monkeypatch.setattr(toy_pack, "DEFAULT_PACK", tmp_path / "pack")
    # a build of this config would train; the pack must be used instead, so training fails loudly if reached
    monkeypatch.setattr(vit, "build_toy_llava", lambda *a, **k: pytest.fail("built instead of unpacking"))
    ctx = RunContext(profile="toy", smoke=True, seed=0, artifacts_dir=tmp_path / "artifacts")
    model_path, report = vit.ensure_toy_llava(ctx, cfg=cfg, progress=False)
    assert "unpacking the shipped toy LLaVA" in capsys.readouterr().out
    assert model_path == tmp_path / "artifacts" / "toy-smoke" / "toy_llava" / "model"
    assert report == {"vqa": {"accuracy_shapes": 0.5}}
    assert toy_pack.tensor_digests(model_path / "model.safetensors") == \
        toy_pack.tensor_digests(build / "model" / "model.safetensors")
    # another configuration does not match the pack: it is built (here: the stub fails)
    other = vit.VITConfig.smoke()
    with pytest.raises(pytest.fail.Exception, match="built instead of unpacking"):
        vit.ensure_toy_llava(RunContext(profile="toy", smoke=True, seed=0, artifacts_dir=tmp_path / "other"),
                             cfg=other, progress=False)


def test_the_rank_by_rank_merge_is_peft_merge_up_to_rounding():
    """merge_stage2_lora sums B @ A one rank at a time (the same bits on every CPU); the result is PEFT's own
    merge_and_unload up to fp32 rounding, on a small linear model with random factors."""
    import copy

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.language_model = torch.nn.ModuleDict({"q_proj": torch.nn.Linear(24, 16, bias=False)})

        def forward(self, x):
            return self.language_model["q_proj"](x)

    torch.manual_seed(0)
    cfg = vit.VITConfig(lora_r=8, lora_alpha=16)
    model = get_peft_model(Tiny(), vit.stage2_lora_config(cfg))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape))
    before = model.base_model.model.language_model["q_proj"].base_layer.weight.detach().clone()
    theirs = copy.deepcopy(model).merge_and_unload().language_model["q_proj"].weight
    ours = vit.merge_stage2_lora(model).language_model["q_proj"].weight
    assert ours.dtype == torch.float32 and not ours.requires_grad
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-5)
    assert (ours - before).abs().mean() > 1  # the factors' product (entries of size ~2 * sqrt(8)) was added
