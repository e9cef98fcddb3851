"""Calibrate the toy annotator's leniency (the oracle's miss rate) to the paper's Figure 3.

The ShapesWorld oracle finds every false statement; Gemini, the paper's annotator, does not, and its ratings
reward fuller answers (Figure 3: verbosity vs helpfulness r = 0.50 between the attribute differences of answer
pairs). This script rates notebook 02's sampled answers again with `oracle:miss=P` for each P of the grid and
prints, per P, the distance of our attribute-difference correlations to Figure 3 and the pairs it would give.

The rule, written before the first run (docs/oracle_and_sampling.md): the toy profile takes the P with the
smallest figure3_distance; a tie goes to the smaller P. The pair outcomes (length, share with a pair) are printed
for the record and play no part in the choice.

    .venv/bin/python scripts/calibrate_oracle_miss.py --artifacts-dir /work/artifacts
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from mmalign_utils import annotation_report as rep
from mmalign_utils.sampling import (CHART_MIX, CHART_MIX_FAMILIES, LRV_MIX, LRV_MIX_FAMILIES, parse_mix,
                                    read_samples, shapesworld_prompts)

GRID = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts-dir", default="artifacts")
    parser.add_argument("--samples", default="samples_k4_t0.9_m160.jsonl",
                        help="notebook 02's samples file, under {artifacts}/toy/samples/")
    parser.add_argument("--n-prompts", type=int, default=600, help="notebook 02's n_prompts (the file's prompts)")
    parser.add_argument("--seed", type=int, default=0, help="notebook 02's seed (prompts and pair draws)")
    parser.add_argument("--grid", type=float, nargs="+", default=list(GRID))
    args = parser.parse_args()

    variant = Path(args.artifacts_dir) / "toy"
    samples_path = variant / "samples" / args.samples
    if not samples_path.is_file():
        raise SystemExit(f"{samples_path} is missing: run notebook 02 first (mmalign run 02 --artifacts-dir "
                         f"{args.artifacts_dir}), or name the samples file with --samples")
    samples = read_samples(samples_path)
    prompts = shapesworld_prompts(args.n_prompts, seed=args.seed, lrv_mix=parse_mix("", LRV_MIX, LRV_MIX_FAMILIES),
                                  chart_mix=parse_mix("", CHART_MIX, CHART_MIX_FAMILIES))
    specs = ["oracle" if p == 0 else f"oracle:miss={p:g}" for p in args.grid]
    table = rep.judge_calibration(samples, prompts, specs, variant / "annotation", samples_path, seed=args.seed,
                                  progress=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print(table)
    best = table["figure3_distance"].idxmin()  # idxmin keeps the first (smaller P) on a tie
    print(f"closest to Figure 3: {best} (distance {table.loc[best, 'figure3_distance']:.3f})")
    out = variant / "annotation" / "oracle_miss_calibration.csv"
    table.to_csv(out)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
