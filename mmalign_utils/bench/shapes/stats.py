"""Statistics over per-item values and percentile bootstrap CIs over items (resampling as results.bootstrap_ci).

`bootstrap` resamples items as `results.bootstrap_ci` does and hands each statistic the resampled values as a
[n_boot, n, ...] array (axis=1) or the original [n, ...] array (axis=None) for the point estimate, so a pooled
ratio (CHAIRi: hallucinated mentions / mentions) or an F1 is recomputed on every resample with items kept whole.

Per-item value layouts:
    mean             one number per item
    ratio            (numerator, denominator) per item -> sum / sum
    f1               (is_positive_label, is_positive_prediction) per item
    f1_mean_splits   (split index, is_positive_label, is_positive_prediction): mean F1 over the splits present
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np



def _axis(axis: int | None) -> int:
    return 0 if axis is None else axis


def mean(a: np.ndarray, axis: int | None = None) -> np.ndarray:
    return np.mean(a, axis=axis)


def ratio(a: np.ndarray, axis: int | None = None) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return a[..., 0].sum(axis=_axis(axis)) / a[..., 1].sum(axis=_axis(axis))


def f1(a: np.ndarray, axis: int | None = None) -> np.ndarray:
    return _masked_f1(a[..., 0], a[..., 1], np.ones_like(a[..., 0]), _axis(axis))


def f1_mean_splits(a: np.ndarray, axis: int | None = None) -> np.ndarray:
    splits = np.unique(a[..., 0])
    per_split = []
    for s in splits:
        inside = (a[..., 0] == s).astype(float)
        per_split.append(_masked_f1(a[..., 1], a[..., 2], inside, _axis(axis)))
    return np.mean(per_split, axis=0)


def _masked_f1(label: np.ndarray, pred: np.ndarray, inside: np.ndarray, axis: int) -> np.ndarray:
    tp = (inside * label * pred).sum(axis=axis)
    fp = (inside * (1 - label) * pred).sum(axis=axis)
    fn = (inside * label * (1 - pred)).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2 * tp / (2 * tp + fp + fn)


STATS: dict[str, Callable] = {"mean": mean, "ratio": ratio, "f1": f1, "f1_mean_splits": f1_mean_splits}


def bootstrap(values: Sequence, stat: str, scale: float = 1.0, n_boot: int = 2000, seed: int = 0
              ) -> tuple[float, float, float]:
    """(statistic, low, high) x scale: a 95% percentile bootstrap over items."""
    if stat not in STATS:
        raise ValueError(f"unknown statistic {stat!r}; choose one of {sorted(STATS)}")
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    fn = STATS[stat]
    rng = np.random.default_rng(seed)  # the same resampling scheme as results.bootstrap_ci
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    boots = np.asarray(fn(x[idx], axis=1), dtype=float)
    value = float(fn(x))
    boots = boots[~np.isnan(boots)]  # resamples where the statistic is 0/0 (no positive prediction...) drop out
    if boots.size == 0:
        return value * scale, math.nan, math.nan
    low, high = np.quantile(boots, [0.025, 0.975])
    return value * scale, float(low) * scale, float(high) * scale
