"""Measurements behind the toy VIT's design (docs/toy_llava.md); a measurement script, not a test.

    .venv/bin/python benchmarks/vit_diagnostics.py step-speed [--steps 4]
    .venv/bin/python benchmarks/vit_diagnostics.py stage1 [--steps 50]
    .venv/bin/python benchmarks/vit_diagnostics.py other-image artifacts/toy/toy_llava/model [--n 50]
    .venv/bin/python benchmarks/vit_diagnostics.py read-probe artifacts/toy/toy_llava/model [--n 40]

step-speed   seconds and resident memory of stage-2 steps (8 examples of the VQA mix, LoRA r32 on every linear
             layer) under three set-ups, each in its own process: fp32 weights under bf16 autocast with SDPA and
             LoRA dropout 0.05 (the first design); bf16 frozen weights with PEFT's fp32 cast of LoRA inputs; and
             what VITConfig does on a CPU with bf16 instructions (bf16 frozen weights, autocast, no input cast,
             eager attention, dropout 0); `fp32`, what it does on one without (fp32 throughout, eager attention,
             dropout 0). `--setups` picks some (bf16 set-ups on a CPU without bf16 instructions take minutes a step).
stage1       after vision pretraining, 50 stage-1 steps from (a) a random projector with the tower training at
             LR 1e-3 / 1e-4, (b) the word-embedding projector start with the tower frozen at LR 2e-4: held-out
             caption loss with the right image and with another scene's image, and the image tokens' mean norm
             (a word embedding's is about 3.2).
other-image  held-out VQA of a saved toy LLaVA with the right images and with each question given the next
             item's image: a model that sees drops toward chance with the wrong image, a blind one does not.
read-probe   where a blind model's sight stops: (1) the nearest word embedding (cosine) of every image token the
             language model receives, for three held-out scenes beside their objects; (2) short-answer VQA of n
             held-out questions with the right image, with another scene's image, and with no image but the
             scene written out in the question ("Picture: top left: large red circle; ..."): if the image tokens
             read as the scene's words and yet the written-out scene is not answered better than the image, the
             language model has not learnt to read a scene, whatever its eyes deliver.
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import subprocess
import sys
import time

import numpy as np
import torch

SETUPS = ("fp32-autocast-sdpa-dropout", "bf16-lora-cast", "current", "fp32")


def step_speed_child(setup: str, steps: int) -> dict:
    import psutil
    from peft import LoraConfig, get_peft_model

    from mmalign_utils.models import build_toy_mllm
    from mmalign_utils.train.lm_batches import answer_only_loss, collate
    from mmalign_utils.train.peft_setup import set_lora_input_casting
    from mmalign_utils.train.vit import VITConfig, make_images, stage2_examples, stage2_plan, store_frozen_lm_in_bf16

    model, processor = build_toy_mllm()
    examples = stage2_examples(stage2_plan(make_images(8 * (steps + 1), 0.15, 0, 96),
                                           VITConfig(text_only_share=0.0),
                                           random.Random(0)), {})
    bf16_weights = setup in ("bf16-lora-cast", "current")
    if bf16_weights:
        store_frozen_lm_in_bf16(model)
    model.set_attn_implementation("eager" if setup in ("current", "fp32") else "sdpa")
    for p in model.parameters():
        p.requires_grad_(False)
    lora = LoraConfig(r=32, lora_alpha=64, lora_dropout=0.05 if setup == "fp32-autocast-sdpa-dropout" else 0.0,
                      target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")
    peft_model = get_peft_model(model, lora)
    set_lora_input_casting(peft_model, setup != "current")
    autocast = setup in ("fp32-autocast-sdpa-dropout", "current")
    peft_model.train()
    times = []
    for step in range(steps + 1):  # the first step warms up and is not timed
        batch = collate(processor, examples[8 * step:8 * step + 8])
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = answer_only_loss(peft_model, batch)
        loss.backward()
        if step:
            times.append(time.perf_counter() - started)
    return {"setup": setup, "seconds_per_step": float(np.mean(times)),
            "rss_gb": psutil.Process().memory_info().rss / 2 ** 30}


def step_speed(steps: int, setups: tuple[str, ...] = SETUPS) -> None:
    for setup in setups:
        out = subprocess.run([sys.executable, __file__, "_step", setup, "--steps", str(steps)], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{r['setup']:28s} {r['seconds_per_step']:6.2f} s/step   RSS {r['rss_gb']:.1f} GB", flush=True)


def stage1(steps: int) -> None:
    from mmalign_utils.models import build_toy_mllm
    from mmalign_utils.train.lm_batches import PlainCaption, answer_only_loss, collate
    from mmalign_utils.train.peft_setup import training_attention
    from mmalign_utils.train.vision_pretrain import (VisionPretrainConfig, cell_features, init_projector_from_words,
                                                     pretrain_vision_tower)
    from mmalign_utils.train.vit import VITConfig, make_images, run_stage1, stage1_examples, store_frozen_lm_in_bf16

    torch.manual_seed(0)
    model, processor = build_toy_mllm()
    pretrain_vision_tower(model.model.vision_tower, VisionPretrainConfig(steps=250), progress=False)
    tower0 = copy.deepcopy(model.model.vision_tower.state_dict())
    random_projector = copy.deepcopy(model.model.multi_modal_projector.state_dict())
    init_projector_from_words(model, processor.tokenizer)
    word_projector = copy.deepcopy(model.model.multi_modal_projector.state_dict())
    store_frozen_lm_in_bf16(model)
    train = stage1_examples(make_images(800, 0.15, 0, 96))
    held = stage1_examples(make_images(48, 0.15, 99, 96))
    other = [PlainCaption(e.caption, held[(i + 7) % len(held)].image) for i, e in enumerate(held)]

    @torch.no_grad()
    def caption_loss(examples) -> float:
        model.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return float(np.mean([answer_only_loss(model, collate(processor, examples[i:i + 16])).item()
                                  for i in range(0, len(examples), 16)]))

    @torch.no_grad()
    def token_norm() -> float:
        pixels = collate(processor, held[:16])["pixel_values"]
        feats = model.model.multi_modal_projector(cell_features(model.model.vision_tower, pixels))
        return float(feats.norm(dim=-1).mean())

    variants = {"random projector, tower trained, LR 1e-3/1e-4": (random_projector, 1e-3, 1e-4),
                "word-embedding start, tower frozen, LR 2e-4": (word_projector, 2e-4, 0.0)}
    for name, (projector, lr_projector, lr_tower) in variants.items():
        model.model.vision_tower.load_state_dict(tower0)
        model.model.multi_modal_projector.load_state_dict(projector)
        cfg = VITConfig(stage1_steps=steps, stage1_lr_projector=lr_projector, stage1_lr_tower=lr_tower)
        with training_attention(model):
            run_stage1(model, processor, train, cfg, progress=False)
        print(f"{name}: held-out caption loss {caption_loss(held):.3f} with the right image, "
              f"{caption_loss(other):.3f} with another; image-token norm {token_norm():.1f}", flush=True)


def other_image(model_dir: str, n: int) -> None:
    from mmalign_utils.models import load_mllm
    from mmalign_utils.precision import cpu_compute_dtype
    from mmalign_utils.train.vit import VITConfig, eval_items, evaluate_vqa

    model, processor = load_mllm(model_dir, dtype=cpu_compute_dtype())
    items, images = eval_items(VITConfig(n_eval_per_family=n), 7_777_777, 96)
    right = evaluate_vqa(model, processor, items, images, progress=False)
    wrong = evaluate_vqa(model, processor, items, images[1:] + images[:1], progress=False)
    right["other_image"] = wrong["correct"].to_numpy()
    table = right.groupby("family").agg(right_image=("correct", "mean"), other_image=("other_image", "mean"),
                                        chance=("chance", "mean"), n=("correct", "size"))
    print(table.round(3).to_string())
    print(f"all: right image {right.correct.mean():.3f}, other image {right.other_image.mean():.3f}")


def read_probe(model_dir: str, n: int) -> None:
    import torch.nn.functional as F

    from mmalign_utils.generate import Conversation, GenerationSettings, generate
    from mmalign_utils.models import load_mllm
    from mmalign_utils.train.vit import _question_text, written_scene
    from mmalign_utils.vqa import is_correct
    from mmalign_utils.world import vocab
    from mmalign_utils.world.qa import make_items
    from mmalign_utils.world.render import render_scene
    from mmalign_utils.world.scenes import generate_scene

    model, processor = load_mllm(model_dir)
    model = model.float().eval()
    tok = processor.tokenizer
    embed = F.normalize(model.model.language_model.get_input_embeddings().weight.float(), dim=-1)
    size = model.config.vision_config.image_size
    rng, qrng = np.random.default_rng(123), random.Random(123)
    for _ in range(3):
        scene = generate_scene(rng)
        pixels = processor.image_processor(render_scene(scene, size), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            feats = model.get_image_features(pixel_values=pixels)
        feats = getattr(feats, "pooler_output", feats)
        feats = (feats[0] if isinstance(feats, (list, tuple)) else feats).reshape(-1, embed.shape[1])
        words = [tok.decode([i]).strip() for i in (F.normalize(feats.float(), dim=-1) @ embed.T).argmax(-1).tolist()]
        side = int(round(len(words) ** 0.5))
        print("scene:", "; ".join(f"{vocab.ROWS[o.row]} {vocab.COLS[o.col]}: {o.size} {o.color} {o.shape}"
                                  for o in scene.objects))
        for r in range(side):
            print("   ", " ".join(f"{w:>9s}" for w in words[r * side:(r + 1) * side]))
    items, images, written = [], [], []
    for _ in range(n):
        scene = generate_scene(rng)
        items.append(make_items(scene, "short_vqa", qrng, n=1)[0])
        images.append(render_scene(scene, size))
        written.append(written_scene(scene))
    questions = [_question_text(it) for it in items]
    settings = GenerationSettings(max_new_tokens=8, batch_size=20)

    def accuracy(convs) -> float:
        preds = generate(model, processor, convs, settings, progress=False)
        return float(np.mean([is_correct(p, it.family, it.short_answer, it.answer_letter,
                                          (it.extra or {}).get("accepted", ())) for p, it in zip(preds, items)]))

    right = accuracy([Conversation.user(q, im) for q, im in zip(questions, images)])
    other = accuracy([Conversation.user(q, im) for q, im in zip(questions, images[1:] + images[:1])])
    text = accuracy([Conversation.user(f"Picture: {w}.\n{q}") for q, w in zip(questions, written)])
    print(f"short-answer VQA on {n} held-out questions: right image {right:.3f}, another scene's image "
          f"{other:.3f}, no image but the scene written out {text:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["step-speed", "stage1", "other-image", "read-probe", "_step"])
    parser.add_argument("arg", nargs="?", help="other-image, read-probe: the saved model folder; _step: the set-up")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--setups", default=",".join(SETUPS), help="step-speed: comma-separated, of " + ", ".join(SETUPS))
    parser.add_argument("--n", type=int, default=None,
                        help="other-image: questions per family (50); read-probe: questions (40)")
    args = parser.parse_args()
    if args.what == "_step":
        print(json.dumps(step_speed_child(args.arg, args.steps or 4)))
    elif args.what == "step-speed":
        step_speed(args.steps or 4, tuple(args.setups.split(",")))
    elif args.what == "stage1":
        stage1(args.steps or 50)
    else:
        if not args.arg:
            raise SystemExit(f"{args.what} needs the saved model folder, e.g. artifacts/toy/toy_llava/model")
        if args.what == "other-image":
            other_image(args.arg, args.n or 50)
        else:
            read_probe(args.arg, args.n or 40)


if __name__ == "__main__":
    main()
