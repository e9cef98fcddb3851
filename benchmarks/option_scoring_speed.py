"""Option scoring vs free generation on Shapes-POPE: time and agreement (a measurement script, not a test).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/option_scoring_speed.py [MODEL_DIR] [--n 300] [--dtype float32]

Loads a saved toy LLaVA (default artifacts/toy/toy_llava/model), builds Shapes-POPE (n questions over the three
splits), answers every question three ways and prints the seconds of each, the speed ratios, the share of
identical yes/no answers (read with POPE's official rule) and the mean F1s:

    option scoring     our path: "Yes"/"No"/"yes"/"no" scored in one forward pass, batched; the prompt prefix
                       that the questions about one image share (system prompt, image, "Is there a") runs once
                       per image (POPE asks 6 questions per image in each of its 3 splits)
    ... whole prompts  the same without sharing the prefix (each prompt runs whole)
    free generation    our batched greedy generation engine (left padding, KV cache)
    original loop      the plain transformers path LLaVA's POPE script (model_vqa_loader) takes: one question at
                       a time, processor + model.generate, greedy, until the end-of-turn token

Goal: >= 5x faster than the original loop with >= 99% identical answers. The loop's cost grows with the length
of the generated answers: a trained toy LLaVA answers "Yes" + end of turn (2 tokens); a smoke or untrained model
rambles on, so pass `--max-new-tokens 2` to time the loop as a trained model runs it (the printed mean says how
many tokens each answer had). Against our own batched generation
the gain is small on the toy, whose answers are one word (free generation is then one prompt pass plus two
small decoding steps); it grows with the answer length.
"""
from __future__ import annotations

import argparse
import time

import torch

from mmalign_utils.bench import pope
from mmalign_utils.bench.shapes import pope_edition
from mmalign_utils.bench.shapes.common import scene_image
from mmalign_utils.bench.shapes.runner import answer_requests
from mmalign_utils.generate import Conversation
from mmalign_utils.models import load_mllm
from mmalign_utils.precision import cpu_compute_dtype


@torch.inference_mode()
def original_loop(model, processor, requests, max_new_tokens: int) -> dict:
    """The baseline as the original scripts run it: per question, the processor and model.generate, batch 1."""
    answers = {}
    for r in requests:
        conv = Conversation.user(r.text, scene_image(r.scene))
        text = processor.apply_chat_template(conv.messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(images=conv.images, text=text, return_tensors="pt", add_special_tokens=False)
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=processor.tokenizer.pad_token_id)
        answers[r.id] = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="artifacts/toy/toy_llava/model")
    parser.add_argument("--n", type=int, default=300, help="questions in all (split evenly over the 3 splits)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32, help="for free generation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="weights for all three paths (auto: the toy profile's compute dtype on this CPU, "
                             "mmalign_utils.precision: bf16 only with bf16 instructions). In bf16 a "
                             "batch with left padding and a single question round differently, which flips yes/no "
                             "answers whose logits nearly tie; float32 shows what agreement the method itself gives")
    args = parser.parse_args()

    model, processor = load_mllm(args.model, dtype=cpu_compute_dtype() if args.dtype == "auto" else
                                 getattr(torch, args.dtype))
    items = pope_edition.build(n_per_split=args.n // 3, seed=args.seed)
    requests = pope_edition.requests(items)
    print(f"model {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, "
          f"{next(model.parameters()).dtype}), {len(requests)} Shapes-POPE questions, batch size {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}")
    answer_requests(model, processor, requests[:args.batch_size], "score_options", args.batch_size)  # warm-up

    started = time.perf_counter()
    scored = answer_requests(model, processor, requests, "score_options", args.batch_size)
    t_score = time.perf_counter() - started
    started = time.perf_counter()
    whole = answer_requests(model, processor, requests, "score_options", args.batch_size, share_prefix=False)
    t_whole = time.perf_counter() - started
    started = time.perf_counter()
    generated = answer_requests(model, processor, requests, "generate", args.batch_size,
                                closed_max_new_tokens=args.max_new_tokens)
    t_generate = time.perf_counter() - started

    started = time.perf_counter()
    looped = original_loop(model, processor, requests, args.max_new_tokens)
    t_loop = time.perf_counter() - started

    same = sum(pope.parse_llava(scored[r.id]) == pope.parse_llava(generated[r.id]) for r in requests)
    same_loop = sum(pope.parse_llava(scored[r.id]) == pope.parse_llava(looped[r.id]) for r in requests)
    f1_scored = pope.score(items, scored)["f1_mean"]
    f1_generated = pope.score(items, generated)["f1_mean"]
    examples = sorted({generated[r.id] for r in requests})[:8]
    tokenizer = getattr(processor, "tokenizer", processor)
    mean_tokens = sum(min(len(tokenizer(generated[r.id], add_special_tokens=False)["input_ids"]) + 1,
                          args.max_new_tokens)  # + 1: the end-of-turn token, unless the answer was cut there
                      for r in requests) / len(requests)
    print(f"option scoring : {t_score:8.2f} s  ({len(requests) / t_score:6.1f} questions/s)  mean F1 {f1_scored:.3f}")
    same_whole = sum(scored[r.id] == whole[r.id] for r in requests)
    print(f"... whole prompts: {t_whole:6.2f} s  ({len(requests) / t_whole:6.1f} questions/s)  same answers as with "
          f"the shared prefix: {same_whole}/{len(requests)}")
    print(f"free generation: {t_generate:8.2f} s  ({len(requests) / t_generate:6.1f} questions/s)  "
          f"mean F1 {f1_generated:.3f}")
    print(f"original loop  : {t_loop:8.2f} s  ({len(requests) / t_loop:6.1f} questions/s)  "
          f"mean F1 {pope.score(items, looped)['f1_mean']:.3f}")
    print(f"speed ratio vs original loop  : {t_loop / t_score:.1f}x   (goal >= 5x)")
    print(f"identical to original loop    : {same_loop}/{len(requests)} = {same_loop / len(requests):.1%}   "
          f"(goal >= 99%)")
    print(f"speed ratio vs batched generation: {t_generate / t_score:.1f}x; option scoring on whole prompts vs "
          f"the loop: {t_loop / t_whole:.1f}x")
    print(f"identical to batched generation  : {same}/{len(requests)} = {same / len(requests):.1%}")
    print(f"generated texts (distinct, first 8): {examples}; mean {mean_tokens:.1f} generated tokens per answer")
    print("(free generation costs one prompt pass plus one step per generated token, so its cost over option "
          "scoring grows with the answer length)")


if __name__ == "__main__":
    main()
