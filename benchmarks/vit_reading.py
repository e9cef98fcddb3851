"""How fast does the toy's language model learn to read a scene? A measurement script, not a test.

The toy LLaVA's eyes work (its image tokens decode to the scene's words: `vit_diagnostics.py read-probe`), yet
after stage 2 it answers about as well with another scene's image. This runs stage 2 exactly as the VIT does
(`vit.run_stage2`: LoRA r32 on every linear layer, the same loop and batches) on short-answer VQA, and asks the
held-out questions along the way with the right scene and with another scene, where the scene reaches the
language model as:

    image    the image tokens of a built toy LLaVA (its vision tower and projector, loaded from --src)
    oracle   in the same 36 places, the exact word embeddings the projector is regressed onto
             (vision_pretrain.patch_word_targets: per cell colour, shape, size, colour); no vision at all
    text     no image; the scene written out in the question ("Picture: top left: large red circle; ...")

    .venv/bin/python benchmarks/vit_reading.py --scene text --steps 100 --every 50
    .venv/bin/python benchmarks/vit_reading.py --scene image --src artifacts/toy/toy_llava/model

Each run trains from SmolLM2 again; on 2 cores 100 steps of 8 examples with two evaluations took 13 minutes,
300 steps with three 38 minutes (image tokens). Levers measured against the default (docs/toy_llava.md):
--full (every LM weight trains), --grounded 1.0 (each conversation opens with a grounded caption), --batch 2,
--lr 5e-3, and --images 4000 (fresh scenes for long schedules; watch memory: `ps` showed about 17 GB with --scene oracle).
"""
from __future__ import annotations

import argparse
import hashlib
import random
import time
from pathlib import Path

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from mmalign_utils.generate import Conversation, GenerationSettings, generate
from mmalign_utils.models import ToyMLLMConfig, build_toy_mllm
from mmalign_utils.train import vit
from mmalign_utils.train.lm_batches import ChatExample
from mmalign_utils.train.peft_setup import training_attention
from mmalign_utils.train.vision_pretrain import (patch_labels, patch_slots, patch_word_targets,
                                                 patches_per_cell_side)
from mmalign_utils.vqa import score_predictions
from mmalign_utils.world.qa import make_items
from mmalign_utils.world.render import render_scene
from mmalign_utils.world.scenes import generate_scene

FAMILIES = ("short_vqa", "existence", "count", "relation", "multiple_choice")


def heldout(n_per_family: int, seed: int = 4242) -> tuple[list, list]:
    qrng, srng = random.Random(seed), np.random.default_rng(seed)
    items, scenes = [], []
    for family in FAMILIES:
        for _ in range(n_per_family):
            scene = generate_scene(srng)
            items.append(make_items(scene, family, qrng, n=1)[0])
            scenes.append(scene)
    return items, scenes


def use_oracle_image_tokens(model, processor, scenes, image_size: int) -> None:
    """Replace the vision side by a table: each known image -> the exact word embeddings of its patches."""
    embed = model.model.language_model.get_input_embeddings().weight.detach().float()
    k = patches_per_cell_side(model.model.vision_tower)
    targets = patch_word_targets(embed, processor.tokenizer, k)
    table = {}

    def key(pixels: torch.Tensor) -> str:
        return hashlib.md5(pixels.detach().float().numpy().round(3).tobytes()).hexdigest()

    for scene in scenes:
        pixels = processor.image_processor(render_scene(scene, image_size), return_tensors="pt")["pixel_values"][0]
        rows = patch_labels(np.asarray(scene.cell_labels())[None], k)[0]
        table[key(pixels)] = targets[rows, patch_slots(k)]

    def oracle_features(pixel_values=None, **kwargs):
        return BaseModelOutputWithPooling(pooler_output=[table[key(p)].to(pixel_values.device) for p in pixel_values])

    model.model.get_image_features = oracle_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", choices=["image", "oracle", "text"], required=True)
    parser.add_argument("--src", help="image: a saved toy LLaVA whose vision tower and projector to use")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--lr", type=float, default=2e-3, help="LoRA learning rate")
    parser.add_argument("--full", action="store_true", help="train every LM weight (LLaVA-1.5) instead of LoRA")
    parser.add_argument("--lr-full", type=float, default=1e-4, help="LM learning rate with --full")
    parser.add_argument("--turns", default="6,10", help="short-answer turns per image: min,max")
    parser.add_argument("--grounded", type=float, default=0.0,
                        help="share of conversations opening with a grounded caption (VITConfig.grounded_caption_share)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--images", type=int, default=700)
    parser.add_argument("--n", type=int, default=24, help="held-out questions per family")
    parser.add_argument("--patch", type=int, default=16, choices=[16, 32],
                        help="oracle/text: the toy's patch size (16: 36 image tokens, one attribute word per patch; "
                             "32: 9, one per cell in reading order, each the cell's words in one vector)")
    args = parser.parse_args()
    if args.scene == "image" and not args.src:
        raise SystemExit("--scene image needs --src, a saved toy LLaVA (e.g. artifacts/toy/toy_llava/model)")
    torch.manual_seed(0)
    cfg = vit.VITConfig(n_train_images=args.images, charts_share=0.0, longform_share=0.0, text_only_share=0.0,
                        turns_per_short_example=tuple(int(x) for x in args.turns.split(",")),
                        stage2_steps=args.steps, stage2_lr_lora=args.lr,
                        stage2_lm="full" if args.full else "lora", stage2_lr_full=args.lr_full,
                        grounded_caption_share=args.grounded, stage2_batch_size=args.batch)
    if args.scene == "image":
        from mmalign_utils.models import load_mllm

        built, _ = load_mllm(args.src)
        cfg.model = ToyMLLMConfig(patch_size=built.config.vision_config.patch_size)
        model, processor = build_toy_mllm(cfg.model)
        # strict loads: a key mismatch must fail, not leave a random tower in place
        model.model.vision_tower.load_state_dict(
            {k: v.float() for k, v in built.model.vision_tower.state_dict().items()})
        model.model.multi_modal_projector.load_state_dict(
            {k: v.float() for k, v in built.model.multi_modal_projector.state_dict().items()})
        del built
    else:
        cfg.model = ToyMLLMConfig(patch_size=args.patch)
        model, processor = build_toy_mllm(cfg.model)
    images = vit.make_images(cfg.n_train_images, 0.0, cfg.seed, cfg.model.image_size)
    examples = vit.stage2_examples(vit.stage2_plan(images, cfg, random.Random(cfg.seed)), {})
    items, scenes = heldout(args.n)
    eval_images = [render_scene(s, cfg.model.image_size) for s in scenes]
    if args.scene == "text":
        examples = [ChatExample([{"role": "user", "content": f"Picture: {vit.written_scene(im.source)}.\n"
                                  + ex.messages[0]["content"][1]["text"]}] + ex.messages[1:], [])
                    for ex, im in zip(examples, images)]
    if args.scene == "oracle":
        use_oracle_image_tokens(model, processor, [im.source for im in images] + scenes, cfg.model.image_size)
    questions = [vit._question_text(it) for it in items]
    settings = GenerationSettings(max_new_tokens=8, batch_size=32)
    start = time.time()

    def ask(peft_model, order: list[int]):
        if args.scene == "text":
            convs = [Conversation.user(f"Picture: {vit.written_scene(scenes[j])}.\n{q}")
                     for q, j in zip(questions, order)]
        else:
            convs = [Conversation.user(q, eval_images[j]) for q, j in zip(questions, order)]
        return score_predictions(items, generate(peft_model, processor, convs, settings, progress=False))

    def on_step(step: int, peft_model, losses: list[float]) -> None:
        if step % args.every and step != args.steps:
            return
        peft_model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.uses_bf16()):
            right = ask(peft_model, list(range(len(items))))
            other = ask(peft_model, list(range(1, len(items))) + [0])
        right["other"] = other["correct"].to_numpy()
        by_family = right.groupby("family")[["correct", "other"]].mean()
        print(f"step {step:4d}  {time.time() - start:5.0f} s  loss {np.mean(losses[-20:]):.3f}  "
              f"right scene {right.correct.mean():.3f}  other scene {right.other.mean():.3f}  | "
              + "  ".join(f"{f} {r.correct:.2f}/{r.other:.2f}" for f, r in by_family.iterrows()), flush=True)

    if not args.full and cfg.uses_bf16():  # as run_stage2 trains
        vit.store_frozen_lm_in_bf16(model)
    lm = f"full LM, LR {args.lr_full}" if args.full else f"LoRA LR {args.lr}"
    print(f"scene as {args.scene}; {len(examples)} examples; {lm}; "
          f"{args.n} held-out questions per family (right/other scene per family below)", flush=True)
    if args.scene == "text":  # where reading starts: the instruct LM, untrained, given the scene as text
        on_step(0, model, [float("nan")])
    with training_attention(model):
        vit.run_stage2(model, processor, examples, cfg, progress=False, on_step=on_step)


if __name__ == "__main__":
    main()
