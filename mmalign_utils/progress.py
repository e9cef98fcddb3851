"""Progress bars that read well both in JupyterLab and in a headless papermill log.

Interactive: tqdm.auto (a widget in Jupyter, a terminal bar elsewhere). Headless (`mmalign run`/`reproduce`
set MMALIGN_PLAIN_PROGRESS=1 for the kernel): a plain-text bar on stdout, redrawn at most every
MMALIGN_PROGRESS_INTERVAL seconds (default 30), so the papermill log shows one line per interval for a long
training stage instead of nothing (widgets do not reach the log) or thousands of redraws.
"""
from __future__ import annotations

import os
import sys

from tqdm.std import tqdm as tqdm_std


def plain_progress() -> bool:
    return os.environ.get("MMALIGN_PLAIN_PROGRESS", "") not in ("", "0", "false")


def progress_bar(iterable=None, **kwargs):
    """tqdm with the right front end for where we run; takes tqdm's arguments."""
    if plain_progress():
        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("mininterval", float(os.environ.get("MMALIGN_PROGRESS_INTERVAL", "30")))
        kwargs.setdefault("ascii", True)
        return _PlainBar(iterable, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


class _PlainBar(tqdm_std):
    """tqdm whose postfix updates wait for the next interval: tqdm redraws on every set_postfix by default, which
    in a log is one line per training step."""

    def set_postfix(self, ordered_dict=None, refresh=False, **kwargs):
        return super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s="", refresh=False):
        return super().set_postfix_str(s, refresh=False)


def rss_gb() -> str:
    """Resident memory of this process, for progress postfixes (a leak shows as a number that keeps rising)."""
    try:
        import psutil

        return f"{psutil.Process().memory_info().rss / 2**30:.1f}G"
    except ImportError:  # psutil comes with jupyter; without it the postfix just says so
        return "n/a"
