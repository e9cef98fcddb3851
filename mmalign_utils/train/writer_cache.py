"""The append-only JSONL caches of the text writers (long-form rephrasings, text-only answers): one record per
line, keyed by "key"; written chunk by chunk and fsync'd, so an interrupted run resumes and a rerun writes
nothing twice."""
from __future__ import annotations

import json
import os
from pathlib import Path


def load_cache(path: str | Path | None) -> dict[str, dict]:
    """The records of a cache file by key ({} without a file). A line that is not JSON (the half-written last
    line of an interrupted run) is skipped."""
    done: dict[str, dict] = {}
    if path is None or not Path(path).exists():
        return done
    for line in Path(path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[rec["key"]] = rec
    return done


def append_cache(path: str | Path | None, records: list[dict]) -> None:
    """Append records (each with a "key") and fsync; nothing without a path."""
    if path is None:
        return
    with open(path, "a") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())
