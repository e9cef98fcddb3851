"""Fingerprints of saved folders, so caches and resumable runs can tell a rebuilt model or dataset from the one they
were made with. One module so every cache asks the same questions: "has this folder changed?" (`folder_stamp`,
cheap: names, sizes, times), "are these the same weights?" (`weights_digest`, content), "is this the known file?"
(`sha256_file`) and "is a saved dataset here?"
(`is_saved_dataset`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

MODEL_FILES = ("*.safetensors",)
DATASET_FILES = ("*.arrow", "*.json")


def folder_stamp(path: str | Path, patterns: Iterable[str] = MODEL_FILES) -> str:
    """Names, sizes and modification times (ns) of the files in folder `path` that match `patterns` (the file
    itself when `path` is a file). Changes whenever those files are rewritten; a path that does not exist (a hub id,
    a synthetic dataset spec) stands for itself."""
    folder = Path(path)
    if folder.is_file():
        files = [folder]
    elif folder.is_dir():
        files = sorted({f for pattern in patterns for f in folder.glob(pattern) if f.is_file()})
    else:
        return str(path)
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of one file's content, read in blocks (model files are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_digest(model_path: str | Path) -> str:
    """SHA-256 of a saved model's weight files (a hub id or a folder without weights stands for itself). Content,
    not times: a resumed run that trains nothing more saves the same merged weights again, and keeps its cache."""
    path = Path(model_path)
    files = sorted({f for pattern in MODEL_FILES for f in path.glob(pattern)}) if path.is_dir() else []
    if not files:
        return str(model_path)
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def is_saved_dataset(folder: str | Path) -> bool:
    """True when `folder` holds a `datasets.Dataset` written by `save_to_disk`. Training sets are single Datasets,
    so a DatasetDict's folder (dataset_dict.json and one folder per split) is not one."""
    folder = Path(folder)
    return any((folder / name).is_file() for name in ("dataset_info.json", "state.json"))


__all__ = ["DATASET_FILES", "MODEL_FILES", "folder_stamp", "is_saved_dataset", "sha256_file", "weights_digest"]
