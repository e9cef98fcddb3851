"""bf16 against fp32 on this CPU, side by side: what `mmalign_utils.precision.cpu_compute_dtype()` decides and why.

    .venv/bin/python benchmarks/cpu_dtype_speed.py            # about 3 minutes on 2 cores

Three measurements, each in both dtypes in the same run:
  1. one linear layer of SmolLM2's MLP (576 -> 1536) and its LM head (576 -> 49,152) at 8, 32 and 2,048 rows
     (decoding a batch; a training batch), in GFLOP/s;
  2. greedy generation with SmolLM2-135M-Instruct (16 prompts, 48 new tokens), in answer tokens per second;
  3. one LoRA training step (r 32 on every linear layer, frozen weights in the dtype, autocast in bf16) on
     4 sequences of 256 tokens, the way the toy LLaVA build and the recipes train on a CPU, in seconds.
The ratios printed are fp32 over bf16 speed: above 1 means the toy profile should compute in fp32 here.
"""
from __future__ import annotations

import argparse
import contextlib
import time

import torch

from mmalign_utils.precision import (BF16_MIN_SPEEDUP, cpu_compute_dtype, cpu_flags, cpu_has_native_bf16,
                                     measured_bf16_speedup)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _seconds(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN builds its kernel on the first call of a shape
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def linear_gflops() -> None:
    print("1. linear layers, GFLOP/s (fp32 | bf16 | fp32/bf16)")
    for rows in (8, 32, 2048):
        for k, n in ((576, 1536), (576, 49152)):
            speed = {}
            for name, dtype in DTYPES.items():
                x, w = torch.randn(rows, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
                flops = 2 * rows * k * n
                speed[name] = flops / _seconds(lambda: torch.nn.functional.linear(x, w),
                                               max(2, int(2e9 / flops))) / 1e9
            print(f"   {rows:5d} x {k} -> {n:6d}: {speed['fp32']:7.1f} | {speed['bf16']:7.1f} | "
                  f"{speed['fp32'] / speed['bf16']:5.2f}x")


def generation_tokens_per_s(n_prompts: int, new_tokens: int) -> None:
    from mmalign_utils.generate import Conversation, GenerationSettings, generate
    from mmalign_utils.models import load_smollm2

    topics = ["a lighthouse keeper", "how vaccines work", "learning French", "the water cycle",
              "planning a garden", "saving money", "the history of tea", "training for a 10k run"]
    convs = [Conversation.user(f"Write a paragraph about {topics[i % len(topics)]}.") for i in range(n_prompts)]
    settings = GenerationSettings(max_new_tokens=new_tokens, batch_size=n_prompts)
    rate, answers = {}, {}
    for name, dtype in DTYPES.items():
        model, tok = load_smollm2(dtype)
        model.eval()
        started = time.perf_counter()
        answers[name] = generate(model, tok, convs, settings, progress=False)
        seconds = time.perf_counter() - started
        n_tokens = sum(len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers[name])
        rate[name] = n_tokens / seconds
    same = sum(a == b for a, b in zip(answers["fp32"], answers["bf16"]))
    print(f"2. SmolLM2 greedy generation, {n_prompts} prompts x {new_tokens} tokens: fp32 {rate['fp32']:.1f} | "
          f"bf16 {rate['bf16']:.1f} answer tokens/s | {rate['fp32'] / rate['bf16']:.2f}x "
          f"({same}/{n_prompts} answers identical across dtypes)")


def lora_step_seconds(batch: int, length: int, repeats: int) -> None:
    from peft import LoraConfig, get_peft_model

    from mmalign_utils.models import load_smollm2
    from mmalign_utils.train.peft_setup import set_lora_input_casting

    seconds = {}
    for name, dtype in DTYPES.items():
        model, _ = load_smollm2(dtype)
        lora = LoraConfig(r=32, lora_alpha=64, lora_dropout=0.0,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        model = get_peft_model(model, lora)
        model.config._attn_implementation = "eager"
        set_lora_input_casting(model, dtype != torch.bfloat16)  # as train/vit.py does under autocast
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)
        ids = torch.randint(100, 40000, (batch, length))
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == torch.bfloat16 else contextlib.nullcontext()

        def step():
            with autocast:
                loss = model(input_ids=ids, labels=ids).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        seconds[name] = _seconds(step, repeats)
    print(f"3. LoRA training step, {batch} x {length} tokens: fp32 {seconds['fp32']:.2f} s | bf16 "
          f"{seconds['bf16']:.2f} s | {seconds['bf16'] / seconds['fp32']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--train-length", type=int, default=256)
    parser.add_argument("--train-repeats", type=int, default=2)
    args = parser.parse_args()
    flags = cpu_flags() or set()
    bf16_flags = sorted(f for f in flags if "bf16" in f or f.startswith("avx512") or f == "avx2")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU flags: {' '.join(bf16_flags) or '?'}")
    native = cpu_has_native_bf16()
    probe = (f"; bf16 speed-up on the probe matmul {measured_bf16_speedup():.2f}x (bf16 needs "
             f"{BF16_MIN_SPEEDUP}x)" if native else "")
    print(f"native bf16: {native}{probe}; the toy profile computes in {cpu_compute_dtype()}")
    linear_gflops()
    generation_tokens_per_s(args.n_prompts, args.new_tokens)
    lora_step_seconds(args.train_batch, args.train_length, args.train_repeats)


if __name__ == "__main__":
    main()
