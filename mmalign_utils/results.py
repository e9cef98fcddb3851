"""The one results table: every measurement any notebook or command makes is a row of results.csv."""
from __future__ import annotations

import csv
import fcntl
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RESULT_COLUMNS = (
    "notebook", "model", "benchmark", "split", "metric", "value", "n", "ci_low", "ci_high", "seed", "profile",
    "protocol", "judge",
)


@dataclass
class ResultRow:
    notebook: str
    model: str
    benchmark: str
    split: str
    metric: str
    value: float
    n: int
    ci_low: float = math.nan
    ci_high: float = math.nan
    seed: int = 0
    profile: str = "toy"
    protocol: str = ""
    judge: str = ""


def append_results(path: str | Path, rows: Iterable[ResultRow | dict]) -> int:
    """Append rows to a results CSV (created with a header if absent). Safe against concurrent writers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dict_rows = []
    for row in rows:
        d = asdict(row) if isinstance(row, ResultRow) else dict(row)
        unknown = set(d) - set(RESULT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown result columns {sorted(unknown)}; allowed: {RESULT_COLUMNS}")
        missing = {"notebook", "model", "benchmark", "metric", "value"} - set(d)
        if missing:
            raise ValueError(f"result row {d} lacks {sorted(missing)}")
        dict_rows.append({c: d.get(c, "") for c in RESULT_COLUMNS})
    with open(path, "a+", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0, 2)
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        if f.tell() == 0:
            writer.writeheader()
        writer.writerows(dict_rows)
        f.flush()
        fcntl.flock(f, fcntl.LOCK_UN)
    return len(dict_rows)


def read_results(path: str | Path):
    """The results table as a pandas DataFrame (empty with the right columns if the file does not exist)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    return pd.read_csv(path)


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0, stat=np.mean
) -> tuple[float, float, float]:
    """Statistic and percentile bootstrap (1 - alpha) CI over items (prompts, questions)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    boots = stat(x[idx], axis=1)
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return float(stat(x)), float(lo), float(hi)


def paired_bootstrap_diff(
    a: Sequence[float], b: Sequence[float], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of a - b over paired items with a percentile bootstrap CI (resampling items, keeping pairs)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return bootstrap_ci(d, n_boot=n_boot, alpha=alpha, seed=seed)
