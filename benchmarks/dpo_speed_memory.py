"""Image-DPO speed and memory: our recipe against plain TRL (a measurement script, not a test).

    .venv/bin/python benchmarks/dpo_speed_memory.py [--model DIR] [--pairs 24] [--batch 4] [--steps 4]
    python benchmarks/dpo_speed_memory.py --gpu [--size 7b] [--batch 4] [--steps 6]

Arms, each in its own subprocess so that peak RSS is measured fairly (ru_maxrss of that process alone):

  trl_fp32   plain TRL DPOTrainer: LoRA (+ projector in modules_to_save), live LoRA-as-reference, TRL's vision
             collator (each image encoded twice per pair and twice more for the reference), fp32
  trl_bf16   the same with bf16 autocast (TRL's default once use_cpu=True; on GPU: bf16 weights)
  ours       AlignDPOTrainer: cached reference log-probs (computed once before training, timed separately),
             each image encoded once per pair, the prompt run once for chosen and rejected (shared key/value
             cache), bf16 autocast with bf16 frozen weights (fp32 on a CPU without bf16 instructions, as the
             recipes' precision "auto"), and while training (peft_setup.training_speedups)
             no fp32 cast of LoRA inputs and, on CPU, eager attention, log-probs from train/cpu_logprobs.py and,
             with fp32 compute, the activations saved for the backward stored in bf16
  ours_fp32_saved  (CPU with fp32 compute only) ours with recipe hardware.saved_activations "fp32": the
             activations kept for the backward stay fp32 instead of bf16 (train/saved_activations.py), to show what
             that storage saves and costs

All arms use the same LoRA shape, data, batch and steps. Printed: seconds per step (after warm-up steps), peak RSS
(CPU) or peak GPU memory, the one-time reference pass, and the ratios ours / trl. Goal: <= 0.5x time, <= 0.7x
memory. A fourth child (`precision`) measures how far bf16 moves the summed log-probs and DPO log-ratios from fp32.

CPU mode: the toy LLaVA (`--model`, default artifacts/toy/toy_llava/model, else artifacts/toy-smoke/toy_llava/model, else a
freshly built untrained one: same speed) on synthetic colour pairs with answers of `--answer-words` words.
`--image-tokens 576` gives the toy LLaVA-1.5's proportions (576 image tokens per prompt, untrained tower).

GPU mode (`--gpu`): a LLaVA-1.5-7B-shaped model (CLIP ViT-L/14-336, 576 image tokens, Vicuna-7B shapes, vocabulary
32064) with random weights built in place, an offline word-level tokenizer and the vicuna_v1 template: nothing
is downloaded. Adds tokens/s and MFU (model FLOPs 6 x N x tokens for the policy's forward and backward, N = the
language model's parameters, attention FLOPs left out; peak bf16 989 TFLOP/s for H100/H200, else
--peak-tflops). `--size tiny --device cpu` runs the GPU code path on a tiny shape (a check that it works).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ARMS = ("trl_fp32", "trl_bf16", "ours")
FILLER = ("the picture shows a plain field of one colour with no objects shapes or text anywhere and the shade "
          "looks even from the top edge to the bottom edge so the whole image reads as a single flat colour").split()


# ------------------------------------------------------------------------------------------------ data and models

def colour_pairs(n: int, answer_words: int, image_size: int, seed: int = 0):
    """n preference pairs about solid-colour images; chosen and rejected answers of about answer_words words."""
    import random

    from PIL import Image

    from datasets import Dataset, Features, List, Sequence, Value
    from datasets import Image as ImageFeature

    from mmalign_utils.formats import completion, trl_preference_view, vision_prompt

    rng = random.Random(seed)
    colours = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
    names = list(colours)
    rows = {"images": [], "prompt": [], "chosen": [], "rejected": []}
    for i in range(n):
        right, wrong = names[i % 4], names[(i + 1) % 4]

        def answer(colour: str) -> str:
            words = [FILLER[(j + rng.randrange(len(FILLER))) % len(FILLER)] for j in range(answer_words - 3)]
            return f"It is {colour} " + " ".join(words) + "."

        rows["images"].append([Image.new("RGB", (image_size, image_size), colours[right])])
        rows["prompt"].append(vision_prompt(f"What colour is picture {i}? Describe it."))
        rows["chosen"].append(completion(answer(right)))
        rows["rejected"].append(completion(answer(wrong)))
    message = List({"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})})
    features = Features({"images": Sequence(ImageFeature()), "prompt": message, "chosen": message,
                         "rejected": message})
    return trl_preference_view(Dataset.from_dict(rows, features=features))


def word_pairs(n: int, question_words: int, answer_words: int, vocab: int, seed: int = 0):
    """GPU mode: pairs whose texts are words w0..w{vocab-1} of the offline tokenizer (one token each)."""
    import random

    from PIL import Image

    from datasets import Dataset, Features, List, Sequence, Value
    from datasets import Image as ImageFeature

    from mmalign_utils.formats import completion, vision_prompt

    rng = random.Random(seed)
    text = lambda k: " ".join(f"w{rng.randrange(vocab)}" for _ in range(k))  # noqa: E731
    message = List({"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})})
    features = Features({"images": Sequence(ImageFeature()), "prompt": message, "chosen": message,
                         "rejected": message})
    rows = {"images": [[Image.new("RGB", (336, 336), (rng.randrange(256), 90, 160))] for _ in range(n)],
            "prompt": [vision_prompt(text(question_words)) for _ in range(n)],
            "chosen": [completion(text(answer_words)) for _ in range(n)],
            "rejected": [completion(text(answer_words)) for _ in range(n)]}
    return Dataset.from_dict(rows, features=features)


def offline_llava_processor(vocab: int = 32000, image_size: int = 336, patch: int = 14):
    """A LlavaProcessor without downloads: word-level tokenizer w0..w{vocab-1} + <unk> <s> </s> <image> <pad>,
    CLIP image processing at 336 px, the vicuna_v1 template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPImageProcessorPil, LlavaProcessor, PreTrainedTokenizerFast

    from mmalign_utils.chat_templates import PAPER_CHAT_TEMPLATE

    words = {f"w{i}": i + 3 for i in range(vocab - 3)}
    words.update({"<unk>": 0, "<s>": 1, "</s>": 2})
    backend = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"], "pad_token": "<pad>"})
    tokenizer.padding_side = "left"
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                            crop_size={"height": image_size, "width": image_size})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
                          vision_feature_select_strategy="default", chat_template=PAPER_CHAT_TEMPLATE,
                          image_token="<image>", num_additional_image_tokens=1)


def gpu_model(size: str, processor, dtype, device):
    import torch
    from transformers import LlavaForConditionalGeneration

    from mmalign_utils.train.dryrun import llava15_config

    if size == "tiny":
        config = llava15_config("7b")
        config.text_config.update({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                   "num_attention_heads": 4, "num_key_value_heads": 4})
        config.vision_config.update({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                     "num_attention_heads": 2})
    else:
        config = llava15_config(size)
    tokenizer = processor.tokenizer
    config.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config.text_config.pad_token_id = tokenizer.pad_token_id
    config.text_config.vocab_size = max(config.text_config.vocab_size, len(tokenizer))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build the weights in their final dtype: no fp32 copy of 7B on the GPU
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model


def cpu_model(path: str | None, dtype, image_tokens: int | None = None):
    from mmalign_utils.models import ToyMLLMConfig, build_toy_mllm, load_mllm

    if image_tokens:  # LLaVA-1.5's proportions on the toy body: an untrained tower with more patches per image
        side = int(round(image_tokens ** 0.5))
        if side * side != image_tokens:
            raise SystemExit(f"--image-tokens {image_tokens}: needs a square number (576 = 24 x 24)")
        model, processor = build_toy_mllm(ToyMLLMConfig(image_size=8 * side, patch_size=8), dtype=dtype)
        return model, processor, f"untrained toy LLaVA with {image_tokens} image tokens"
    candidates = [path] if path else ["artifacts/toy/toy_llava/model", "artifacts/toy-smoke/toy_llava/model"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "config.json").is_file():
            model, processor = load_mllm(candidate, dtype=dtype)
            return model, processor, candidate
    if path:
        raise SystemExit(f"--model {path}: no saved model there")
    model, processor = build_toy_mllm(dtype=dtype)
    return model, processor, "untrained toy LLaVA (build_toy_mllm)"


# ------------------------------------------------------------------------------------------------ one arm

def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_arm(arm: str, args) -> dict:
    import torch
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from mmalign_utils.train.dpo import build_dpo_trainer, prepare_dpo_dataset
    from mmalign_utils.train.peft_setup import build_lora_config
    from mmalign_utils.train.recipes import default_recipe

    baseline_rss = peak_rss_mb()
    device = args.device
    from mmalign_utils.precision import cpu_uses_bf16

    # "ours" computes as the recipe's precision "auto" does: bf16 on a GPU or on a CPU with bf16 instructions
    if arm == "ours_fp32_saved" and (args.gpu or cpu_uses_bf16()):
        raise SystemExit("ours_fp32_saved is for CPUs without bf16 instructions (elsewhere ours computes in bf16)")
    bf16 = arm == "trl_bf16" or (arm == "ours" and (args.gpu or cpu_uses_bf16()))
    weights = torch.bfloat16 if (bf16 and (arm == "ours" or args.gpu)) else torch.float32
    if args.gpu:
        processor = offline_llava_processor()
        model = gpu_model(args.size, processor, weights, device)
        n_pairs = args.batch * (args.steps + args.warmup)
        data = word_pairs(n_pairs, args.question_words, args.answer_words, vocab=31000)
        source = f"random LLaVA-1.5-{args.size}-shaped model"
    else:
        model, processor, source = cpu_model(args.model, weights, args.image_tokens)
        n_pairs = args.batch * (args.steps + args.warmup)
        data = colour_pairs(n_pairs, args.answer_words, image_size=64)

    recipe = default_recipe("dpo", "toy")
    recipe.output_dir = str(Path(args.workdir) / arm)
    recipe.lora.r, recipe.lora.alpha, recipe.lora.dropout = args.lora_r, 2 * args.lora_r, 0.0
    recipe.optim.per_device_batch_size, recipe.optim.gradient_accumulation_steps = args.batch, 1
    recipe.optim.max_steps, recipe.optim.warmup_ratio = args.steps + args.warmup, 0.0
    recipe.optim.max_length = None
    recipe.hardware.precision = "bf16" if bf16 else "fp32"
    recipe.hardware.weights_dtype = "bf16" if weights == torch.bfloat16 else "fp32"
    recipe.hardware.gradient_checkpointing = args.gradient_checkpointing
    recipe.save_steps, recipe.logging_steps = 10 ** 9, 1
    recipe.dpo.ref_batch_size = args.batch

    step_times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            step_times.append(time.perf_counter() - self.t)

    reference_seconds = 0.0
    if arm.startswith("ours"):
        import shutil

        shutil.rmtree(Path(recipe.output_dir) / "ref_logps", ignore_errors=True)  # time a cold reference pass
        if device.startswith("cuda"):
            model.to(device)
        started = time.perf_counter()
        data = prepare_dpo_dataset(recipe, data, model, processor, progress=False)
        reference_seconds = time.perf_counter() - started
        trainer = build_dpo_trainer(recipe, model, processor, data, callbacks=[Timer()], disable_tqdm=True)
    else:
        from mmalign_utils.train.peft_setup import training_arguments

        config = DPOConfig(**training_arguments(recipe), beta=0.1, loss_type=["sigmoid"], disable_dropout=True,
                           disable_tqdm=True)
        trainer = DPOTrainer(model=model, args=config, train_dataset=data, processing_class=processor,
                             peft_config=build_lora_config(model, recipe), callbacks=[Timer()])
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    from mmalign_utils.train.peft_setup import training_speedups

    # ours trains as train_and_save does around every recipe; the TRL arms as plain TRL does
    saved_activations = "fp32" if arm == "ours_fp32_saved" else "auto"
    with training_speedups(trainer, saved_activations) if arm.startswith("ours") else contextlib.nullcontext() \
            as storage:
        trainer.train()
    measured = step_times[args.warmup:]
    seconds = sum(measured) / len(measured)
    # Tokens of the DPO work per step: real tokens of the 2B concatenated sequences (TRL's layout), same for all arms
    batch = trainer.data_collator([data[i] for i in range(args.batch)])
    tokens = int(batch["attention_mask"].sum())
    result = {"arm": arm, "model": source, "seconds_per_step": seconds, "step_times": measured,
              "peak_rss_mb": peak_rss_mb(), "baseline_rss_mb": baseline_rss, "reference_seconds": reference_seconds,
              "pairs_per_step": args.batch, "tokens_per_step": tokens, "threads": torch.get_num_threads(),
              "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
              # fp32 bytes of saved activations stored in bf16 instead, per step (None: storage as computed)
              "bf16_stored_mb_per_step": storage.fp32_bytes / 2 ** 20 / (args.steps + args.warmup) if storage else None}
    if device.startswith("cuda"):
        result["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        result["gpu"] = torch.cuda.get_device_name()
    if args.gpu:
        language_params = sum(p.numel() for n, p in model.named_parameters()
                              if "language_model" in n and "lora_" not in n and "modules_to_save" not in n)
        peak = args.peak_tflops or (989.0 if any(k in result.get("gpu", "") for k in ("H100", "H200")) else 312.0)
        result["tokens_per_second"] = tokens / seconds
        result["mfu"] = 6 * language_params * tokens / seconds / (peak * 1e12)
        result["peak_tflops"] = peak
    return result


def run_precision(args) -> dict:
    """Summed log-probs of the same pairs in fp32 and in bf16 (bf16 weights + autocast): how far bf16 moves them."""
    import torch

    from mmalign_utils.train.pair_batches import PairCollator, pair_sequence_logps

    model, processor, source = cpu_model(args.model, torch.float32, args.image_tokens)
    data = colour_pairs(args.batch * 2, args.answer_words, image_size=64)
    batch = PairCollator(processor)([data[i] for i in range(len(data))])
    chosen32, rejected32 = pair_sequence_logps(model, batch)
    model = model.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chosen16, rejected16 = pair_sequence_logps(model, batch)
    n_tokens = batch["completion_mask"].sum(1).float()
    per_token = (torch.cat([chosen16, rejected16]) - torch.cat([chosen32, rejected32])).abs() / n_tokens
    ratio32, ratio16 = chosen32 - rejected32, chosen16 - rejected16
    return {"arm": "precision", "model": source, "pairs": len(data),
            "mean_abs_logp_diff_per_token": float(per_token.mean()),
            "max_abs_seq_logp_diff": float((torch.cat([chosen16, rejected16]) -
                                            torch.cat([chosen32, rejected32])).abs().max()),
            "mean_abs_logratio_diff": float((ratio16 - ratio32).abs().mean()),
            "mean_abs_logratio": float(ratio32.abs().mean()),
            "same_sign_share": float(((ratio16 > 0) == (ratio32 > 0)).float().mean())}


# ------------------------------------------------------------------------------------------------ driver

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="CPU mode: a saved toy LLaVA folder")
    parser.add_argument("--image-tokens", type=int, default=None,
                        help="CPU mode: an untrained toy LLaVA whose images take this many tokens (576: LLaVA-1.5)")
    parser.add_argument("--gpu", action="store_true", help="LLaVA-1.5-shaped random model on the GPU")
    parser.add_argument("--size", default="7b", choices=["7b", "13b", "tiny"], help="GPU mode model shape")
    parser.add_argument("--device", default=None, help="default: cuda in GPU mode, cpu otherwise")
    parser.add_argument("--batch", type=int, default=None, help="pairs per step (CPU 4, GPU 4)")
    parser.add_argument("--steps", type=int, default=4, help="measured steps")
    parser.add_argument("--warmup", type=int, default=1, help="steps not measured")
    parser.add_argument("--answer-words", type=int, default=None, help="words per answer (CPU 40, GPU 200)")
    parser.add_argument("--question-words", type=int, default=20, help="GPU mode")
    parser.add_argument("--lora-r", type=int, default=None, help="LoRA rank (CPU 16, GPU 128)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--arms", default=None, help="default: trl_fp32,trl_bf16,ours,precision on CPU; "
                        "trl_bf16,ours with --gpu (an fp32 7B with live reference does not fit next to its "
                        "activations)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per arm, interleaved; the fastest is kept")
    parser.add_argument("--workdir", default="/tmp/dpo_speed_memory")
    parser.add_argument("--arm", default=None, help=argparse.SUPPRESS)  # internal: run one arm and print JSON
    args = parser.parse_args()
    args.device = args.device or ("cuda" if args.gpu else "cpu")
    args.batch = args.batch or 4
    args.answer_words = args.answer_words or (200 if args.gpu else 40)
    args.lora_r = args.lora_r or (128 if args.gpu else 16)
    args.arms = args.arms or ("trl_bf16,ours" if args.gpu else ",".join(ARMS) + ",precision")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.arm:
        result = run_precision(args) if args.arm == "precision" else run_arm(args.arm, args)
        print("RESULT " + json.dumps(result))
        return

    results: dict[str, dict] = {}
    arms = [a for a in args.arms.split(",") if a and not (a == "precision" and args.gpu)]
    # Interleaved repeats (A B C A B C): on a shared machine the load drifts over minutes, so each arm keeps its
    # fastest run
    for arm in [a for _ in range(args.repeats) for a in arms]:
        if arm == "precision" and arm in results:
            continue
        command = [sys.executable, __file__, "--arm", arm] + sys.argv[1:]
        proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"arm {arm} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            continue
        r = json.loads(lines[-1][len("RESULT "):])
        if arm == "precision":
            results[arm] = r
            continue
        results.setdefault(f"{arm}_runs", []).append(r["seconds_per_step"])
        if arm not in results or r["seconds_per_step"] < results[arm]["seconds_per_step"]:
            results[arm] = r
        memory = f"peak GPU {r['peak_gpu_gib']:.2f} GiB" if "peak_gpu_gib" in r else \
            f"peak RSS {r['peak_rss_mb']:.0f} MB (after imports {r['baseline_rss_mb']:.0f} MB)"
        extra = f", {r['tokens_per_second']:.0f} tokens/s, MFU {r['mfu']:.1%}" if "mfu" in r else ""
        print(f"{arm:15s}: {r['seconds_per_step']:.2f} s/step ({r['pairs_per_step']} pairs, {r['tokens_per_step']} "
              f"tokens), {memory}{extra}; losses {[round(x, 4) for x in r['losses']]}", flush=True)

    if args.repeats > 1:
        print("s/step of every run: " + "; ".join(f"{arm} {[round(t, 2) for t in results.get(arm + '_runs', [])]}"
                                                for arm in arms if arm != "precision"))
    for name in ("ours", "ours_fp32_saved"):
        if name not in results:
            continue
        ours = results[name]
        stored = ours.get("bf16_stored_mb_per_step")
        print(f"{name}: model {ours['model']}; torch threads {ours['threads']}; one-time reference pass "
              f"{ours['reference_seconds']:.1f} s for {ours['pairs_per_step'] * (args.steps + args.warmup)} pairs; "
              + (f"saved activations stored in bf16: {stored:.0f} MB of fp32 per step" if stored else
                 "saved activations as computed"))
        key = "peak_gpu_gib" if "peak_gpu_gib" in ours else "peak_rss_mb"
        for base in ("trl_fp32", "trl_bf16"):
            if base in results:
                b = results[base]
                line = (f"{name} / {base}: time {ours['seconds_per_step'] / b['seconds_per_step']:.2f}x (goal <= 0.5), "
                        f"memory {ours[key] / b[key]:.2f}x (goal <= 0.7)")
                if key == "peak_rss_mb":
                    line += (f"; above the after-import baseline: "
                             f"{(ours[key] - ours['baseline_rss_mb']) / (b[key] - b['baseline_rss_mb']):.2f}x")
                print(line)
    if "precision" in results:
        p = results["precision"]
        print(f"bf16 vs fp32 on {p['pairs']} pairs: mean |d log p| per token {p['mean_abs_logp_diff_per_token']:.4f}, "
              f"max |d summed log p| {p['max_abs_seq_logp_diff']:.3f}; DPO log-ratio chosen-rejected: mean |d| "
              f"{p['mean_abs_logratio_diff']:.3f} against a mean |value| of {p['mean_abs_logratio']:.3f}, same sign "
              f"in {p['same_sign_share']:.0%}")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    (Path(args.workdir) / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
