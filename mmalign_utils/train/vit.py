"""Visual instruction tuning of the toy LLaVA, LLaVA-1.5's recipe at toy scale.

    vision pretraining  the SigLIP tower learns to name the contents of each grid cell, and the projector starts
                        out mapping each cell to the LLM's embeddings of the words for its content (the toy's
                        stand-in for CLIP's text alignment; see vision_pretrain)
    stage 1             tower + projector learn to caption, language model frozen (LLaVA's "feature alignment",
                        in its "plain" format: the image, then the caption; no chat template, no instruction)
    stage 2             projector + LoRA on every linear layer of the language model, on a VQA mix dominated by
                        short answers ("Answer the question using a single word or phrase.", as in LLaVA-1.5's
                        665k mix) with a smaller share of long-form answers written in natural language by a
                        text-only LLM from the scene graph (train.longform)

The LoRA is merged at the end, so the result is a plain LlavaForConditionalGeneration, like llava-1.5-13b-hf,
on which the alignment recipes later put their own LoRA. `ensure_toy_llava` caches the result under the run's
artifacts directory and reuses it.
"""
from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmalign_utils.generate import Conversation, GenerationSettings, generate
from mmalign_utils.models import ToyMLLMConfig
from mmalign_utils.precision import cpu_uses_bf16
from mmalign_utils.progress import progress_bar, rss_gb
from mmalign_utils.train.checkpoint import LoopCheckpoint
from mmalign_utils.train.lm_batches import (ChatExample, PlainCaption, answer_only_loss, collate,
                                           length_grouped_batches, tokenize_example)
from mmalign_utils.train.longform import write_longform
from mmalign_utils.train.text_mix import text_instructions, training_answer, write_text_answers
from mmalign_utils.train.peft_setup import set_lora_input_casting, training_attention
from mmalign_utils.train.toy_pack import default_pack_for, unpack_toy_llava
from mmalign_utils.train.vision_pretrain import (ProjectorInitConfig, VisionPretrainConfig,
                                                 init_projector_from_words, pretrain_vision_tower)
from mmalign_utils.vqa import score_predictions
from mmalign_utils.world import vocab
from mmalign_utils.world.charts import generate_chart, render_chart
from mmalign_utils.world.qa import make_items, with_mc_suffix, with_short_suffix
from mmalign_utils.world.render import render_scene
from mmalign_utils.world.scenes import generate_scene

SHORT_FAMILIES = ("short_vqa", "existence", "count", "relation", "multiple_choice")
LONG_FAMILIES = ("describe", "reasoning", "conversation")
EVAL_FAMILIES = SHORT_FAMILIES + ("chart",)


@dataclass
class VITConfig:
    """Toy defaults: the build that sees (held-out VQA goal 0.8; docs/toy_llava.md measures why it takes this
    long: the language model needs about 500 stage-2 steps of 8 multi-turn examples to learn to read a scene,
    even written out as text). Hours on 2 CPU cores, checkpointed so that it resumes; `smoke()` under 2 min."""

    n_train_images: int = 6000  # each stage-2 example on a fresh image: repeated scenes teach more slowly
    charts_share: float = 0.1
    # Share of stage-2 examples with long-form answers (LLaVA-1.5: ~24% of 665k). Each is written by the LLM
    # (about 2 s on 2 cores) and is ten times as long as a short conversation's answers, so 8% of examples still
    # carry about 40% of the loss's answer tokens.
    longform_share: float = 0.08
    turns_per_short_example: tuple[int, int] = (6, 10)  # LLaVA-1.5 groups several short questions per image
    # Share of stage-2 examples that are text-only conversations (LLaVA-1.5: 40k ShareGPT of 665k, about 6%),
    # answered by the text-only LLM (train.text_mix). Without them 800 steps turned text answers into scene talk.
    text_only_share: float = 0.06
    n_text_instructions: int = 400
    text_max_new_tokens: int = 200
    text_min_words: int = 40  # a cut answer is kept up to its last whole sentence if that leaves this many words
    # Share of short-answer conversations that open with a grounded caption (every object and where it is, in
    # reading order), as LLaVA-1.5's mix has region-level Visual Genome / RefCOCO data: the densest signal for
    # which image token is which place.
    grounded_caption_share: float = 0.0
    n_eval_per_family: int = 50
    # 36 image tokens (2 x 2 patches per world cell, each starting as one of the cell's words) read better than 9
    # (docs/toy_llava.md: one vector per cell).
    model: ToyMLLMConfig = field(default_factory=lambda: ToyMLLMConfig(patch_size=16))
    # patch 16: each patch sees a quarter of its cell; 1000 steps named 0.907 of object cells right (0.963 of all)
    vision: VisionPretrainConfig = field(default_factory=lambda: VisionPretrainConfig(steps=2000))
    projector_init: ProjectorInitConfig = field(default_factory=ProjectorInitConfig)
    stage1_steps: int = 50
    stage1_batch_size: int = 16
    stage1_lr_projector: float = 2e-4
    stage1_lr_tower: float = 0.0  # LLaVA freezes the tower in stage 1
    stage2_steps: int = 800
    stage2_batch_size: int = 8
    stage2_lr_lora: float = 2e-3  # 5e-4 learnt the reading far more slowly (benchmarks/vit_reading.py)
    # "lora": LoRA on every linear layer of the LM (merged after); "full": every LM weight trains, as LLaVA-1.5's
    # stage 2 does (the frozen-LM bf16 storage then does not apply: trained weights stay fp32 under autocast).
    stage2_lm: str = "lora"
    stage2_lr_full: float = 1e-4
    stage2_lr_projector: float = 1e-4
    lora_r: int = 32
    lora_alpha: int = 64
    lora_dropout: float = 0.0  # 0.05 costs a dropout copy of every LoRA input (see bf16_frozen_lm)
    writer_temperature: float = 0.7
    writer_max_new_tokens: int = 60
    # Frozen language-model weights stored in bf16, trainable ones (tower, projector, LoRA) in fp32, all matmuls
    # under bf16 autocast, eager attention. Stage-2 steps of 8 examples (LoRA r32) on 2 cores with bf16
    # instructions: 4.4 s / 4.9 GB, against 5.7 s / 6.0 GB when PEFT casts every LoRA input to fp32 and 9.9 s /
    # 7.1 GB with fp32 weights under autocast, SDPA and dropout 0.05 (benchmarks/vit_diagnostics.py step-speed
    # --steps 3). None: only where the CPU has bf16 instructions (mmalign_utils/precision.py); without them bf16
    # is emulated and several times slower than plain fp32.
    bf16_frozen_lm: bool | None = None
    # Held-out VQA (validation scenes, not the final evaluation's) every so many stage-2 steps, with the right and
    # with another scene's image: the reading curve, kept in the report. 0: none.
    stage2_eval_every: int = 100
    n_val_per_family: int = 20
    checkpoint_every: int = 25  # stage-2 steps between checkpoints (about 4 minutes on 2 cores)
    seed: int = 0

    def uses_bf16(self) -> bool:
        """Whether the frozen language model is stored in bf16 and the matmuls run under bf16 autocast."""
        return cpu_uses_bf16() if self.bf16_frozen_lm is None else self.bf16_frozen_lm

    @classmethod
    def smoke(cls) -> VITConfig:
        # 9 image tokens (patch 32) and short turns keep CI fast; the path is the same.
        return cls(n_train_images=48, charts_share=0.15, longform_share=0.2, turns_per_short_example=(3, 6),
                   text_only_share=0.15, n_text_instructions=3, text_max_new_tokens=24, text_min_words=3,
                   n_eval_per_family=4, model=ToyMLLMConfig(), vision=VisionPretrainConfig.smoke(),
                   projector_init=ProjectorInitConfig.smoke(), stage1_steps=4, stage1_batch_size=4,
                   stage2_steps=6, stage2_batch_size=4, writer_max_new_tokens=30, stage2_eval_every=3,
                   n_val_per_family=2, checkpoint_every=3)


# ----------------------------------------------------------------------------------------------- data


def _question_text(item) -> str:
    """The user text of a short-answer turn, exactly as in training and evaluation (the multiple-choice
    question already lists its options, as LLaVA's MMBench prompt does)."""
    return with_mc_suffix(item.question) if item.family == "multiple_choice" else with_short_suffix(item.question)


def _short_answer(item) -> str:
    return item.answer_letter if item.family == "multiple_choice" else item.short_answer


def caption(source, kind: str) -> str:
    """Stage-1 caption: every object with its colour, size and position (charts: their facts)."""
    if kind == "chart":
        return source.facts_text()
    parts = [f"a {o.size} {o.color} {o.shape} {vocab.position_prepositional(o.row, o.col)}" for o in source.objects]
    return ("There is " + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] + ".")


# The grounded turn's answer is the stage-1 caption: every object and its place, in the scene's reading order.
GROUNDED_PROMPTS = ("Describe each object in the image and where it is.",
                    "List the objects you see and their positions.",
                    "What is where in this picture?")


def written_scene(scene) -> str:
    """The scene written out cell by cell ("top left: large red circle; top center: empty; ..."): the text a
    language model would read if the image tokens were words; the reading diagnostics ask questions with it."""
    cells = ["empty"] * (vocab.GRID * vocab.GRID)
    for o in scene.objects:
        cells[o.cell] = f"{o.size} {o.color} {o.shape}"
    return "; ".join(f"{vocab.ROWS[c // vocab.GRID]} {vocab.COLS[c % vocab.GRID]}: {cells[c]}"
                     for c in range(len(cells)))


@dataclass
class TrainImage:
    source: object  # Scene or Chart
    kind: str  # "shapes" | "chart"
    image: object  # PIL image


def make_images(n: int, charts_share: float, seed: int, image_size: int) -> list[TrainImage]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if rng.random() < charts_share:
            chart = generate_chart(rng)
            out.append(TrainImage(chart, "chart", render_chart(chart, image_size)))
        else:
            scene = generate_scene(rng)
            out.append(TrainImage(scene, "shapes", render_scene(scene, image_size)))
    return out


def _user(text: str, with_image: bool) -> dict:
    content = [{"type": "image"}, {"type": "text", "text": text}] if with_image else text
    return {"role": "user", "content": content}


def stage1_examples(images: list[TrainImage]) -> list[PlainCaption]:
    """LLaVA's stage 1: image followed by its caption, in the plain format (no template, no instruction)."""
    return [PlainCaption(caption(im.source, im.kind), im.image) for im in images]


def stage2_plan(images: list[TrainImage], cfg: VITConfig, rng: random.Random) -> list[dict]:
    """Decide per image: a multi-turn short-answer conversation, one long-form item to be written, or (the image
    left unused) the next text-only conversation."""
    plan = []
    n_text = 0
    for im in images:
        if cfg.text_only_share > 0 and rng.random() < cfg.text_only_share:
            plan.append({"text": n_text})
            n_text += 1
        elif rng.random() < cfg.longform_share:
            family = "describe" if im.kind == "chart" else rng.choice(LONG_FAMILIES)
            item = make_items(im.source, family, rng, n=1)[0]
            plan.append({"image": im, "long": item})
        else:
            n_turns = rng.randint(*cfg.turns_per_short_example)
            families = ["chart"] if im.kind == "chart" else list(SHORT_FAMILIES)
            items = []
            for _ in range(n_turns):
                items.extend(make_items(im.source, rng.choice(families), rng, n=1))
            entry = {"image": im, "short": items}
            if cfg.grounded_caption_share > 0 and im.kind == "shapes" and rng.random() < cfg.grounded_caption_share:
                entry["grounded"] = rng.choice(GROUNDED_PROMPTS)
            plan.append(entry)
    return plan


def _long_turns(item) -> list[tuple[str, str]]:
    if item.turns:
        return list(item.turns)
    return [(item.question, item.detailed_answer)]


def stage2_examples(plan: list[dict], written: dict[tuple[int, int], str],
                    text_pool: list[tuple[str, str]] | None = None) -> list[ChatExample]:
    """`text_pool`: (instruction, answer) pairs; text-only entries of the plan take them in turn."""
    examples = []
    for p_idx, p in enumerate(plan):
        messages = []
        if "text" in p:
            if not text_pool:
                raise ValueError("the stage-2 plan has text-only conversations but no text answers were given")
            q, a = text_pool[p["text"] % len(text_pool)]
            examples.append(ChatExample([_user(q, False), {"role": "assistant", "content": a}], []))
            continue
        if "short" in p:
            if "grounded" in p:
                messages += [_user(p["grounded"], True),
                             {"role": "assistant", "content": caption(p["image"].source, "shapes")}]
            for t, item in enumerate(p["short"]):
                messages += [_user(_question_text(item), t == 0 and not messages),
                             {"role": "assistant", "content": _short_answer(item)}]
        else:
            for t, (q, a) in enumerate(_long_turns(p["long"])):
                messages += [_user(q, t == 0), {"role": "assistant", "content": written.get((p_idx, t), a)}]
        examples.append(ChatExample(messages, [p["image"].image]))
    return examples


def eval_items(cfg: VITConfig, seed: int, image_size: int) -> tuple[list, list]:
    """Held-out questions (scenes never used in training): n per family, with their images."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    items, images = [], []
    for family in EVAL_FAMILIES:
        for _ in range(cfg.n_eval_per_family):
            if family == "chart":
                src = generate_chart(nrng)
                img = render_chart(src, image_size)
            else:
                src = generate_scene(nrng)
                img = render_scene(src, image_size)
            items.append(make_items(src, family, rng, n=1)[0])
            images.append(img)
    return items, images


# ------------------------------------------------------------------------------------------- training


def _train_loop(model, processor, examples: list[ChatExample] | list[PlainCaption], param_groups: list[dict],
                steps: int, batch_size: int, seed: int, desc: str, bf16: bool, progress: bool,
                on_step=None, checkpoint: LoopCheckpoint | None = None, records: list[dict] | None = None
                ) -> list[float]:
    """AdamW with warm-up and cosine decay over length-grouped batches. `on_step(step, model, losses)` is called
    after each step (diagnostics evaluate along the way with it; it must leave the model in train mode); a dict
    it returns is appended to `records`. With `checkpoint`, the loop saves every `checkpoint.every` steps and, if
    the folder holds a checkpoint, first goes back to it (same batches, same schedule, records kept)."""
    opt = torch.optim.AdamW(param_groups, weight_decay=0.0)
    warmup = max(1, int(0.03 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        # a Python float: numpy scalars in the learning rates would not load back with weights_only=True
        opt, lambda s: float(min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / max(1, steps))))))
    rng = random.Random(seed)
    lengths = [len(tokenize_example(processor, ex)[0]) for ex in examples]
    queue: list[list[int]] = []
    losses: list[float] = []
    records = records if records is not None else []
    if checkpoint is not None and checkpoint.exists():
        queue, losses, saved = checkpoint.load(model, opt, sched, rng)
        records[:] = saved
        print(f"[mmalign] {desc}: resuming at step {len(losses)} of {steps} from {checkpoint.folder}")
    params = [p for g in param_groups for p in g["params"]]
    model.train()
    bar = progress_bar(range(len(losses), steps), desc=desc, disable=not progress, initial=len(losses),
                       total=steps)
    for _ in bar:
        if not queue:
            queue = [b for b in length_grouped_batches(lengths, batch_size, rng) if len(b) == batch_size]
        batch = collate(processor, [examples[i] for i in queue.pop()])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = answer_only_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}", rss=rss_gb())
        if on_step is not None:
            record = on_step(len(losses), model, losses)
            if isinstance(record, dict):
                records.append(record)
            model.train()
        if checkpoint is not None and (len(losses) % checkpoint.every == 0 or len(losses) == steps):
            checkpoint.save(model, opt, sched, rng, queue, losses, records)
    model.eval()
    return losses


def store_frozen_lm_in_bf16(model) -> None:
    """Frozen language model (and its tied head) stored in bf16; see VITConfig.bf16_frozen_lm. LoRA adapters
    added later stay fp32 (PEFT upcasts adapters on a bf16 base) and AdamW updates them in fp32."""
    model.model.language_model.to(torch.bfloat16)
    model.lm_head.to(torch.bfloat16)


def run_stage1(model, processor, examples, cfg: VITConfig, progress: bool = True,
               checkpoint: LoopCheckpoint | None = None) -> list[float]:
    """Projector (and the tower, if cfg.stage1_lr_tower > 0) on captions, language model frozen."""
    for p in model.parameters():
        p.requires_grad_(False)
    tower, projector = model.model.vision_tower, model.model.multi_modal_projector
    groups = [{"params": list(projector.parameters()), "lr": cfg.stage1_lr_projector}]
    if cfg.stage1_lr_tower > 0:
        groups.append({"params": list(tower.parameters()), "lr": cfg.stage1_lr_tower})
    for group in groups:
        for p in group["params"]:
            p.requires_grad_(True)
    return _train_loop(model, processor, examples, groups, cfg.stage1_steps, cfg.stage1_batch_size, cfg.seed + 1,
                       "stage 1 (captions)", cfg.uses_bf16(), progress, checkpoint=checkpoint)


# The language model's linear layers that stage 2 adapts with LoRA.
STAGE2_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def stage2_lora_config(cfg: VITConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
                      target_modules=STAGE2_LORA_TARGETS)


def merge_stage2_lora(peft_model):
    """The stage-2 adapters merged into the language model, in fp32: W + dW computed on bf16 weights would be
    rounded before it is ever saved. `train.toy_pack` merges a packed build with this same function, on whatever
    machine unpacks it, so dW = scaling * B @ A is summed one rank at a time with elementwise multiplies and adds:
    each is one IEEE-rounded operation, the same on every CPU, where a matmul's summation order (and so its last
    bits) depends on the processor's kernels."""
    set_lora_input_casting(peft_model, True)
    peft_model.base_model.model.to(torch.float32)
    with torch.no_grad():
        for module in peft_model.modules():
            if not (hasattr(module, "lora_A") and hasattr(module, "base_layer")):
                continue
            for adapter in module.lora_A.keys():
                a, b = module.lora_A[adapter].weight, module.lora_B[adapter].weight  # (r, in), (out, r)
                delta = torch.zeros_like(module.base_layer.weight)
                for k in range(a.shape[0]):
                    delta += b[:, k:k + 1] * a[k:k + 1, :]
                module.base_layer.weight += delta * module.scaling[adapter]
    merged = peft_model.unload()  # the LoRA layers replaced by their (now merged) base layers
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged


def run_stage2(model, processor, examples, cfg: VITConfig, progress: bool = True, on_step=None,
               checkpoint: LoopCheckpoint | None = None, records: list[dict] | None = None,
               lora_out: dict | None = None):
    """Returns (merged model, losses). `on_step`, `checkpoint`, `records`: see _train_loop. `lora_out`: a dict
    that receives the trained LoRA factors (name -> fp32 tensor) before they are merged."""
    from peft import get_peft_model

    if cfg.stage2_lm not in ("lora", "full"):
        raise ValueError(f"VITConfig.stage2_lm must be 'lora' or 'full', not {cfg.stage2_lm!r}")
    for p in model.parameters():
        p.requires_grad_(False)
    if cfg.stage2_lm == "full":
        model.model.language_model.to(torch.float32)
        model.lm_head.to(torch.float32)
        groups = [{"params": list(model.model.language_model.parameters()), "lr": cfg.stage2_lr_full},
                  {"params": list(model.model.multi_modal_projector.parameters()), "lr": cfg.stage2_lr_projector}]
        for group in groups:
            for p in group["params"]:
                p.requires_grad_(True)
        losses = _train_loop(model, processor, examples, groups, cfg.stage2_steps, cfg.stage2_batch_size,
                             cfg.seed + 2, "stage 2 (VQA mix, full LM)", cfg.uses_bf16(), progress, on_step, checkpoint,
                             records)
        for p in model.parameters():
            p.requires_grad_(False)
        return model, losses
    peft_model = get_peft_model(model, stage2_lora_config(cfg))
    set_lora_input_casting(peft_model, not cfg.uses_bf16())  # under autocast the bf16 input goes straight in
    projector = peft_model.base_model.model.model.multi_modal_projector
    for p in projector.parameters():
        p.requires_grad_(True)
    lora_params = [p for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n]
    groups = [{"params": lora_params, "lr": cfg.stage2_lr_lora},
              {"params": list(projector.parameters()), "lr": cfg.stage2_lr_projector}]
    losses = _train_loop(peft_model, processor, examples, groups, cfg.stage2_steps, cfg.stage2_batch_size,
                         cfg.seed + 2, "stage 2 (VQA mix)", cfg.uses_bf16(), progress, on_step, checkpoint,
                         records)
    if lora_out is not None:
        lora_out.update({n: p.detach().to(torch.float32).clone() for n, p in peft_model.named_parameters()
                         if "lora_" in n})
    return merge_stage2_lora(peft_model), losses


def save_stage2_lora(folder: Path, lora_state: dict, cfg: VITConfig) -> None:
    """The trained stage-2 LoRA factors (fp32) and what merging them needs: the LoRA shape and whether the frozen
    language model was stored in bf16 before the merge (it changes the merged weights' bits)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in lora_state.items()}, str(folder / "adapter.safetensors"))
    (folder / "lora.json").write_text(json.dumps({"r": cfg.lora_r, "alpha": cfg.lora_alpha,
                                                  "dropout": cfg.lora_dropout, "targets": STAGE2_LORA_TARGETS,
                                                  "frozen_lm_bf16": cfg.uses_bf16()}, indent=2))


def evaluate_vqa(model, processor, items, images, batch_size: int = 32, progress: bool = True):
    convs = [Conversation.user(_question_text(it), img) for it, img in zip(items, images)]
    preds = generate(model, processor, convs, GenerationSettings(max_new_tokens=8, batch_size=batch_size),
                     progress="VQA eval" if progress else False)
    return score_predictions(items, preds)


# ------------------------------------------------------------------------------------------- pipeline


def build_toy_llava(out_dir: str | Path, cfg: VITConfig | None = None, progress: bool = True,
                    longform_cache: str | Path | None = None, text_cache: str | Path | None = None) -> dict:
    """Build, train, evaluate and save the toy LLaVA under out_dir. Returns (and saves) the report.

    `longform_cache`, `text_cache`: JSONL files where the writer's long-form rewrites and text-only answers are
    kept, so a rebuild (or a crash) never writes them twice."""
    from mmalign_utils.models import build_toy_mllm, load_smollm2, save_mllm

    cfg = cfg or VITConfig()
    out_dir = Path(out_dir)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    timings: dict[str, float] = {}
    t0 = time.time()
    model, processor = build_toy_mllm(cfg.model)
    image_size = cfg.model.image_size

    out_dir.mkdir(parents=True, exist_ok=True)
    _check_same_config(out_dir / "build_config.json", asdict(cfg))
    t = time.time()
    vision_metrics = _vision_phase(model, processor, cfg, out_dir / "ckpt_vision", progress)
    timings["vision_pretraining"] = time.time() - t

    images = make_images(cfg.n_train_images, cfg.charts_share, cfg.seed, image_size)
    plan = stage2_plan(images, cfg, rng)

    # Long-form answers: the text-only writer rephrases each plain long answer, sentence by sentence.
    t = time.time()
    jobs, keys = [], []
    for p_idx, p in enumerate(plan):
        if "long" in p:
            for t_idx, (_, a) in enumerate(_long_turns(p["long"])):
                jobs.append((a, p["image"].source, p["image"].kind))
                keys.append((p_idx, t_idx))
    writer, writer_tok = load_smollm2(dtype=torch.float32)
    written = write_longform(jobs, writer, writer_tok, temperature=cfg.writer_temperature,
                             max_new_tokens=cfg.writer_max_new_tokens, seed=cfg.seed, progress=progress,
                             cache_path=longform_cache)
    timings["longform_writing"] = time.time() - t
    # Text-only conversations (the toy's ShareGPT): the same LLM answers plain requests; only finished answers.
    t = time.time()
    text_pool: list[tuple[str, str]] = []
    text_report: dict = {"n_instructions": 0}
    if any("text" in p for p in plan):
        answers = write_text_answers(text_instructions(cfg.n_text_instructions, cfg.seed), writer, writer_tok,
                                     temperature=cfg.writer_temperature, max_new_tokens=cfg.text_max_new_tokens,
                                     seed=cfg.seed, progress=progress, cache_path=text_cache)
        kept = [(a, training_answer(a, cfg.text_min_words)) for a in answers]
        text_pool = [(a.instruction, text) for a, text in kept if text]
        if not text_pool:
            raise RuntimeError(f"none of the {len(answers)} text-only answers is usable (finished, or cut with at "
                               f"least {cfg.text_min_words} words of whole sentences); raise VITConfig.text_max_new_tokens")
        text_report = {"n_instructions": len(answers), "n_finished": sum(a.finished for a in answers),
                       "n_used": len(text_pool),
                       "mean_words": float(np.mean([len(a.split()) for _, a in text_pool])),
                       "examples": [f"{q} -> {a}" for q, a in text_pool[:3]]}
    del writer
    timings["text_answers"] = time.time() - t
    rejected: dict[str, int] = {}
    for w in written:
        for reason in w.reasons:
            rejected[reason] = rejected.get(reason, 0) + 1
    n_sentences = sum(w.n_sentences for w in written)
    longform = {"n_answers": len(written), "n_sentences": n_sentences,
                "natural_share": sum(w.n_natural for w in written) / n_sentences if n_sentences else 0.0,
                "rejected_by_reason": rejected,
                "examples": [w.text for w in written if w.n_natural == w.n_sentences and w.n_sentences > 1][:5]}
    written_map = {k: w.text for k, w in zip(keys, written)}

    if cfg.uses_bf16():
        store_frozen_lm_in_bf16(model)
    with training_attention(model):  # eager on CPU while training, the model's own implementation after
        t = time.time()
        stage1_losses = run_stage1(model, processor, stage1_examples(images), cfg, progress,
                                   checkpoint=LoopCheckpoint(out_dir / "ckpt_stage1", every=cfg.stage1_steps))
        timings["stage1"] = time.time() - t
        t = time.time()
        curve: list[dict] = []
        lora_state: dict = {}
        model, stage2_losses = run_stage2(
            model, processor, stage2_examples(plan, written_map, text_pool), cfg, progress,
            on_step=_reading_curve(processor, cfg, image_size, progress),
            checkpoint=LoopCheckpoint(out_dir / "ckpt_stage2", every=cfg.checkpoint_every), records=curve,
            lora_out=lora_state)
        timings["stage2"] = time.time() - t  # this session's share when it resumed from a checkpoint
    if lora_state:  # kept so that `mmalign pack-toy` can ship the build as its trained parts (train/toy_pack.py)
        save_stage2_lora(out_dir / "lora", lora_state, cfg)
    # Evaluate exactly what is saved: all weights rounded to bf16 (half the disk; loaders choose their own dtype),
    # computed in the build's dtype (widening bf16 weights to fp32 is exact).
    model = model.to(torch.bfloat16).to(torch.bfloat16 if cfg.uses_bf16() else torch.float32)

    t = time.time()
    items, eval_images = eval_items(cfg, cfg.seed + 7_777_777, image_size)
    scored = evaluate_vqa(model, processor, items, eval_images, progress=progress)
    # The control that tells seeing from guessing: the same questions, each with the next item's image (another
    # scene of the same kind). A model that uses the image drops toward chance here; a blind one does not.
    other = evaluate_vqa(model, processor, items, eval_images[1:] + eval_images[:1], progress=progress)
    scored["correct_with_other_image"] = other["correct"].to_numpy()
    timings["vqa_eval"] = time.time() - t
    timings["total"] = time.time() - t0

    shapes = scored[scored.kind == "shapes"]
    report = {
        "config": asdict(cfg),
        "timings_s": timings,
        "vision_pretraining": vision_metrics,
        "longform": longform,
        "mix": {"n_images": len(images), "n_long": sum("long" in p for p in plan),
                "n_short_turns": sum(len(p.get("short", [])) for p in plan),
                "n_text_only": sum("text" in p for p in plan)},
        "text_only": text_report,
        "stage1_loss": [stage1_losses[0], float(np.mean(stage1_losses[-10:]))],
        "stage2_loss": [stage2_losses[0], float(np.mean(stage2_losses[-10:]))],
        "stage2_reading_curve": curve,
        "vqa": {
            "accuracy_shapes": float(shapes.correct.mean()),
            "chance_shapes": float(shapes.chance.mean()),
            "accuracy_shapes_other_image": float(shapes.correct_with_other_image.mean()),
            "by_family": scored.groupby("family").agg(
                accuracy=("correct", "mean"), accuracy_other_image=("correct_with_other_image", "mean"),
                chance=("chance", "mean"), n=("correct", "size")).reset_index().to_dict("records"),
        },
    }
    save_mllm(model.to(torch.bfloat16), processor, out_dir / "model")
    scored.to_csv(out_dir / "vqa_eval.csv", index=False)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    for ckpt in out_dir.glob("ckpt_*"):  # the saved model supersedes them
        shutil.rmtree(ckpt)
    return report


# How the arithmetic runs, not what is trained: a build may resume on a machine with another CPU.
RESUMABLE_ACROSS = ("bf16_frozen_lm",)


def _check_same_config(path: Path, config: dict) -> None:
    """A half-finished build resumes only under the configuration that started it (RESUMABLE_ACROSS aside)."""
    config = json.loads(json.dumps(config))  # tuples as lists, as they come back from the file
    if path.exists():
        before = json.loads(path.read_text())
        changed = sorted(k for k in set(before) | set(config)
                         if before.get(k) != config.get(k) and k not in RESUMABLE_ACROSS)
        if changed:
            raise RuntimeError(f"{path.parent} holds a half-finished build with another configuration (changed: "
                               f"{changed}); delete that folder to start again, or build with its configuration")
    else:
        path.write_text(json.dumps(config, indent=2))


def _vision_phase(model, processor, cfg: VITConfig, ckpt: Path, progress: bool) -> dict:
    """Vision pretraining and the projector's word initialisation, or their saved result from `ckpt`."""
    from safetensors.torch import load_file, save_file

    tower, projector = model.model.vision_tower, model.model.multi_modal_projector
    if (ckpt / "metrics.json").exists():
        print(f"[mmalign] vision pretraining: reusing {ckpt}")
        tower.load_state_dict(load_file(str(ckpt / "tower.safetensors")))
        projector.load_state_dict(load_file(str(ckpt / "projector.safetensors")))
        return json.loads((ckpt / "metrics.json").read_text())
    metrics = pretrain_vision_tower(tower, cfg.vision, progress=progress)
    metrics["projector_init"] = init_projector_from_words(model, processor.tokenizer, cfg.projector_init)
    ckpt.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(ckpt / "tower.safetensors"))
    save_file({k: v.contiguous() for k, v in projector.state_dict().items()}, str(ckpt / "projector.safetensors"))
    (ckpt / "metrics.json").write_text(json.dumps(metrics))  # written last: its presence means complete
    return metrics


def _reading_curve(processor, cfg: VITConfig, image_size: int, progress: bool):
    """on_step hook: every cfg.stage2_eval_every steps, held-out short-answer VQA on validation scenes (a seed of
    their own) with the right and with another scene's image. Returns a record for the report."""
    if cfg.stage2_eval_every <= 0:
        return None
    val_cfg = VITConfig(n_eval_per_family=cfg.n_val_per_family)
    items, images = eval_items(val_cfg, cfg.seed + 5_555_555, image_size)
    keep = [i for i, it in enumerate(items) if it.family != "chart"]
    items, images = [items[i] for i in keep], [images[i] for i in keep]
    other_images = images[1:] + images[:1]

    def on_step(step: int, peft_model, losses: list[float]) -> dict | None:
        if step % cfg.stage2_eval_every and step != cfg.stage2_steps:
            return None
        peft_model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.uses_bf16()):
            right = evaluate_vqa(peft_model, processor, items, images, progress=False)
            other = evaluate_vqa(peft_model, processor, items, other_images, progress=False)
        right["other"] = other["correct"].to_numpy()
        record = {"step": step, "loss": float(np.mean(losses[-cfg.stage2_eval_every:])),
                  "accuracy": float(right.correct.mean()), "accuracy_other_image": float(right.other.mean()),
                  "n": len(items),
                  "by_family": {f: [float(r.correct), float(r.other)]
                                for f, r in right.groupby("family")[["correct", "other"]].mean().iterrows()}}
        if progress:
            print(f"[mmalign] stage 2 step {step}: held-out VQA {record['accuracy']:.3f} with the right image, "
                  f"{record['accuracy_other_image']:.3f} with another scene's (n={len(items)})", flush=True)
        return record

    return on_step


def _finished_build(folder: Path) -> bool:
    return (folder / "report.json").is_file() and (folder / "model").is_dir()


def toy_llava_dir(ctx) -> Path:
    """The folder of the run's toy LLaVA (model/ and report.json): the nearest finished build among the run's
    input dirs (its own artifacts folder, then a sweep's root: RunContext.input_dirs), else where it will be
    built (RunContext.input_home)."""
    found = ctx.find_input("toy_llava", exists=_finished_build)
    return found if found is not None else ctx.input_home("toy_llava")


def ensure_toy_llava(ctx, cfg: VITConfig | None = None, progress: bool = True, rebuild: bool = False
                     ) -> tuple[Path, dict]:
    """The run's toy LLaVA: reuse the finished build at `toy_llava_dir(ctx)` ({artifacts}/{variant}/toy_llava, or
    a sweep root's); else unpack the repository's pack of the same configuration (`train.toy_pack`, packs/) when
    there is one and no half-finished build waits; else build it there, resuming a half-finished build's
    checkpoints. `rebuild` trains a new one whatever exists."""
    out_dir = ctx.input_home("toy_llava") if rebuild else toy_llava_dir(ctx)
    report_path = out_dir / "report.json"
    if _finished_build(out_dir) and not rebuild:
        print(f"[mmalign] reusing the toy LLaVA at {out_dir} (delete it or pass rebuild=True to retrain)")
        return out_dir / "model", json.loads(report_path.read_text())
    if cfg is None:
        cfg = VITConfig.smoke() if ctx.smoke else VITConfig()
        cfg.seed = ctx.seed
        cfg.vision.seed = ctx.seed
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    pack = None if rebuild or (tmp / "build_config.json").exists() else default_pack_for(asdict(cfg))
    if pack is not None:  # the repository ships this very build: minutes instead of hours
        print(f"[mmalign] unpacking the shipped toy LLaVA from {pack} into {out_dir} (its build report and SHA-256 "
              f"checks travel with it; `mmalign build-toy --rebuild` trains one here instead)", flush=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        unpack_toy_llava(pack, tmp)
        tmp.rename(out_dir)
        return out_dir / "model", json.loads(report_path.read_text())
    report = build_toy_llava(tmp, cfg, progress, longform_cache=out_dir.parent / "vit_longform.jsonl",
                             text_cache=out_dir.parent / "vit_text_answers.jsonl")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)  # only a finished build is ever reused
    return out_dir / "model", report
