"""What every benchmark module shares: user-supplied data files checked by SHA-256, JSON/JSONL helpers.

Nothing here downloads. A missing or altered file raises `BenchmarkDataError` naming every problem at once and
saying where to get each file and where to put it.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmalign_utils.stamps import sha256_file


class BenchmarkDataError(FileNotFoundError):
    """Raised when benchmark files are missing or differ from the known versions."""


@dataclass(frozen=True)
class DataFile:
    """One file a benchmark needs, relative to the user's data directory."""

    relpath: str  # where it must sit under data_dir, e.g. "pope/coco_pope_random.json"
    source: str  # where to get it (repository + path, or dataset id), for the error message
    sha256: str | None = None  # the known version; None when several versions are accepted
    alternatives: tuple[str, ...] = ()  # other accepted SHA-256 values (e.g. an older pinned version)


def check_files(benchmark: str, data_dir: str | Path, files: Iterable[DataFile], verify_hash: bool = True) -> dict:
    """Check that all files exist (and match a known SHA-256). Returns {relpath: sha256 seen}.

    Raises one BenchmarkDataError listing every missing or mismatching file with what to download.
    """
    data_dir = Path(data_dir)
    problems, seen = [], {}
    for f in files:
        path = data_dir / f.relpath
        if not path.exists():
            problems.append(f"  missing  {path}\n           get it from: {f.source}")
            continue
        digest = sha256_file(path) if (verify_hash or f.sha256) else ""
        seen[f.relpath] = digest
        accepted = {h for h in (f.sha256, *f.alternatives) if h}
        if verify_hash and accepted and digest not in accepted:
            problems.append(
                f"  changed  {path}\n           sha256 {digest} is not a known version ({', '.join(sorted(accepted))});"
                f"\n           get the known file from: {f.source} (or pass verify_hash=False to score it anyway)"
            )
    if problems:
        raise BenchmarkDataError(
            f"{benchmark}: benchmark data under {data_dir} is incomplete. Nothing is downloaded for you; "
            f"fetch these files and put them at the paths shown:\n" + "\n".join(problems)
        )
    return seen


def read_jsonl(path: str | Path) -> list[dict]:
    """Read JSON Lines, naming the file and line of any bad record."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix or remove that line") from None
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def iter_json_or_jsonl(path: str | Path) -> Iterator[Any]:
    """Some official files named .json are JSON Lines (POPE): accept either."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from json.loads(text)
    elif stripped.startswith("{") and "\n{" not in stripped.strip():
        yield json.loads(text)
    else:
        yield from read_jsonl(path)
