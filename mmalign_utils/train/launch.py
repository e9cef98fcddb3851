"""The one entry point for the alignment recipes.

    python -m mmalign_utils.train.launch recipes/dpo_toy.yaml [--key value ...] [--dry-run] [--print-recipe]
    accelerate launch --config_file configs/accelerate/zero3.yaml -m mmalign_utils.train.launch recipes/dpo_paper.yaml

Overrides are dotted recipe keys: `--lora.r 8 --optim.learning_rate 1e-4 --dpo.loss_type ipo --smoke true`.
`--dry-run` builds the recipe's LLaVA-1.5 shape on the meta device and prints parameters, optimiser groups and a
memory estimate (options `--gpus N`, `--seq-len L`, `--size 7b|13b`); nothing is downloaded or allocated.

Two names are for smoke runs without any artifacts: `--model tiny-random` (a tiny random LLaVA, tiny.py) and
`--train_data synthetic:N` (N synthetic prompts built into the recipe's dataset kind).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mmalign_utils.train.recipes import Recipe, RecipeError, dump_recipe, load_recipe

TINY_MODEL = "tiny-random"
SYNTHETIC_PREFIX = "synthetic:"


def parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """`--a.b value` pairs (and a bare `--flag` meaning true) into {"a.b": "value"}; values are coerced later."""
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise RecipeError(f"unexpected argument {token!r}: overrides are --key value")
        key = token[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            value = tokens[i + 1]
            i += 2
        else:
            value, i = "true", i + 1
        overrides[key] = value
    return overrides


def synthetic_dataset(method: str, n: int, seed: int = 0):
    from mmalign_utils import preference
    from mmalign_utils.train.tiny import synthetic_prompts

    prompts = synthetic_prompts(n, seed=seed)
    builders = {"dpo": preference.build_dpo_pairs, "rejection_sampling": preference.build_rejection_sampling,
                "steerlm": preference.build_steerlm, "sft": preference.build_sft}
    return builders[method](prompts)


def resolve_inputs(recipe: Recipe) -> tuple[Any, Any, Any]:
    """(model, processor, dataset) for the two smoke names; None where the recipe's paths are to be loaded."""
    model = processor = dataset = None
    if recipe.model == TINY_MODEL:
        from mmalign_utils.train.peft_setup import resolve_weights_dtype
        from mmalign_utils.train.tiny import build_tiny_llava

        model, processor = build_tiny_llava(seed=recipe.seed, dtype=resolve_weights_dtype(recipe))
    if recipe.train_data.startswith(SYNTHETIC_PREFIX):
        count = recipe.train_data[len(SYNTHETIC_PREFIX):]
        if not count.isdigit():
            raise RecipeError(f"train_data {recipe.train_data!r}: expected synthetic:<number of prompts>")
        dataset = synthetic_dataset(recipe.method, int(count), recipe.seed)
    return model, processor, dataset


def run(recipe: Recipe, progress: bool = True):
    """Train the recipe (DPO or one of the SFT methods) and return its RunResult."""
    model, processor, dataset = resolve_inputs(recipe)
    if recipe.is_dpo:
        from mmalign_utils.train.dpo import run_dpo

        return run_dpo(recipe, model, processor, dataset, progress=progress)
    from mmalign_utils.train.sft import run_sft

    return run_sft(recipe, model, processor, dataset, progress=progress)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmalign_utils.train.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="a YAML recipe (recipes/*.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="meta-device shape check and memory estimate")
    parser.add_argument("--gpus", type=int, default=4, help="dry run: GPUs to spread ZeRO over")
    parser.add_argument("--seq-len", type=int, default=None, help="dry run: tokens per sequence (default max_length)")
    parser.add_argument("--size", choices=["7b", "13b"], default=None, help="dry run: model size (default from model)")
    parser.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
    args, rest = parser.parse_known_args(argv)
    try:
        recipe = load_recipe(args.recipe, parse_overrides(rest))
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_recipe:
        print(dump_recipe(recipe))
        return 0
    if args.dry_run:
        from mmalign_utils.train.dryrun import dry_run

        report = dry_run(recipe, size=args.size, n_gpus=args.gpus, seq_len=args.seq_len)
        print(report.format())
        return 0 if not report.frozen_parts_trainable else 1
    result = run(recipe)
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(json.dumps({"output_dir": result.output_dir, "outputs": result.outputs, "metrics": result.metrics,
                          "parameters": result.parameters}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
