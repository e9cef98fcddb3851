"""Cached reference log-probs for image DPO (the paper's offline reference pass, which TRL 1.16 refuses for
vision datasets).

`attach_reference_logps(ds, model, processor, cache_dir, settings)` computes the summed log-probs of every row's
chosen and rejected answer under the starting model, once, and returns the dataset with two more columns,
`ref_chosen_logps` and `ref_rejected_logps` (TRL's names). The values are stored in `cache_dir` in a parquet file
keyed by a hash of the model weights + processor and the settings that change the numbers (max_length, compute
dtype); each row is keyed by a hash of its prompt, answers and image pixels. A second call with the same model
reads the file and computes nothing; new rows are computed and appended.

Tokenization and collation are those of TRL's DataCollatorForVisionPreference (pair_batches.PairCollator builds
the identical ids, masks and truncation), so the cached numbers line up with what the live reference would give.
`dpo.AlignDPOTrainer` then reads them from the batch and skips the reference forward.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from mmalign_utils.progress import progress_bar
from mmalign_utils.train.pair_batches import REF_KEYS, PairCollator, pair_sequence_logps

CACHE_FORMAT = 1


@dataclass(frozen=True)
class RefSettings:
    """What, besides the model and the row, changes a reference log-prob."""

    max_length: int | None = None
    compute_dtype: str = "fp32"  # autocast dtype of the reference pass: "bf16", "fp16" or "fp32" (no autocast)
    shared_prefix: bool = True  # the prompt runs once per pair (float-level differences only)


# ------------------------------------------------------------------------------------------------------------
# Hashes.

def _update_with_tensor(h: Any, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().contiguous().cpu()
    h.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    h.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def model_fingerprint(model: torch.nn.Module, processor: Any = None) -> str:
    """sha256 of every weight (names, dtypes, shapes, bytes) and of what the processor does to text and images.

    Reads all weights once (about a second for the toy model, about a minute for a 13B model); pass your own
    `model_hash` to attach_reference_logps to skip it.
    """
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        _update_with_tensor(h, tensor)
    if processor is not None:
        h.update(str(getattr(processor, "chat_template", "")).encode())
        tokenizer = getattr(processor, "tokenizer", processor)
        h.update(json.dumps({"vocab": len(tokenizer), "pad": tokenizer.pad_token_id}, sort_keys=True).encode())
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is not None:
            h.update(image_processor.to_json_string().encode())
    return h.hexdigest()


def _image_digest(image: Any) -> str:
    if hasattr(image, "tobytes"):
        return hashlib.sha256(repr((image.mode, image.size)).encode() + image.tobytes()).hexdigest()
    if isinstance(image, dict) and image.get("bytes") is not None:
        return hashlib.sha256(image["bytes"]).hexdigest()
    return hashlib.sha256(str(image).encode()).hexdigest()


def row_fingerprint(row: dict) -> str:
    """sha256 of a preference row: prompt, chosen, rejected (as JSON) and the pixels of its images."""
    images = row.get("images") if row.get("images") is not None else ([row["image"]] if row.get("image") else [])
    text = json.dumps([row["prompt"], row["chosen"], row["rejected"]], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256((text + "|" + ",".join(_image_digest(i) for i in images)).encode()).hexdigest()


def cache_key(model_hash: str, settings: RefSettings) -> str:
    return hashlib.sha256((model_hash + json.dumps(asdict(settings), sort_keys=True)).encode()).hexdigest()


# ------------------------------------------------------------------------------------------------------------
# The store.

class ReferenceCache:
    """One parquet file per (model, settings): columns sample_hash, ref_chosen_logps, ref_rejected_logps, with a
    JSON sidecar naming the model hash and settings."""

    def __init__(self, directory: str | Path, model_hash: str, settings: RefSettings):
        self.directory = Path(directory)
        self.model_hash = model_hash
        self.settings = settings
        key = cache_key(model_hash, settings)[:16]
        self.path = self.directory / f"ref_logps-{key}.parquet"
        self.meta_path = self.path.with_suffix(".json")

    def load(self) -> dict[str, tuple[float, float]]:
        if not self.path.is_file():
            return {}
        import pandas as pd

        meta = json.loads(self.meta_path.read_text()) if self.meta_path.is_file() else {}
        if meta and meta.get("model_hash") != self.model_hash:
            raise ValueError(f"{self.path}: written for model {meta.get('model_hash')!r}, not {self.model_hash!r}; "
                             "delete the file (its key collided)")
        frame = pd.read_parquet(self.path)
        return {h: (float(c), float(r)) for h, c, r in
                zip(frame["sample_hash"], frame["ref_chosen_logps"], frame["ref_rejected_logps"])}

    def save(self, values: dict[str, tuple[float, float]]) -> None:
        import pandas as pd

        self.directory.mkdir(parents=True, exist_ok=True)
        hashes = sorted(values)
        frame = pd.DataFrame({"sample_hash": hashes,
                              "ref_chosen_logps": [values[h][0] for h in hashes],
                              "ref_rejected_logps": [values[h][1] for h in hashes]})
        tmp = self.path.with_suffix(".parquet.tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(self.path)  # a crash never leaves a half-written cache
        self.meta_path.write_text(json.dumps({"format": CACHE_FORMAT, "model_hash": self.model_hash,
                                              "settings": asdict(self.settings), "rows": len(hashes),
                                              "written": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))


# ------------------------------------------------------------------------------------------------------------
# Computing.

def autocast_context(device: torch.device | str, compute_dtype: str):
    if compute_dtype == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[compute_dtype]
    return torch.autocast(torch.device(device).type, dtype=dtype)


def compute_reference_logps(model, processor, rows: Dataset | list[dict], settings: RefSettings = RefSettings(),
                            batch_size: int = 8, device: str | torch.device | None = None,
                            progress: bool = True) -> tuple[list[float], list[float]]:
    """Summed log-probs of chosen and rejected for each row under `model` (adapters, if any, as they are)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if next(model.parameters()).device != device:
        model.to(device)
    collator = PairCollator(processor, max_length=settings.max_length)
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    try:
        with torch.no_grad(), autocast_context(device, settings.compute_dtype):
            for start in progress_bar(range(0, len(rows), batch_size), desc="reference log-probs", disable=not progress):
                examples = [rows[i] for i in range(start, min(start + batch_size, len(rows)))]
                batch = {k: v.to(device) for k, v in collator(examples).items()}
                c, r = pair_sequence_logps(model, batch, shared_prefix=settings.shared_prefix)
                chosen += c.tolist()
                rejected += r.tolist()
    finally:
        model.train(was_training)
    return chosen, rejected


def attach_reference_logps(dataset: Dataset, model, processor, cache_dir: str | Path,
                           settings: RefSettings = RefSettings(), batch_size: int = 8,
                           device: str | torch.device | None = None, model_hash: str | None = None,
                           progress: bool = True) -> Dataset:
    """`dataset` plus ref_chosen_logps / ref_rejected_logps from the cache, computing (and storing) missing rows.

    Call it with the starting model, before any adapter is added: with a PEFT model, disable the adapters first.
    """
    for column in ("prompt", "chosen", "rejected"):
        if column not in dataset.column_names:
            raise ValueError(f"not a preference dataset: column {column!r} is missing (has {dataset.column_names})")
    model_hash = model_hash or model_fingerprint(model, processor)
    cache = ReferenceCache(cache_dir, model_hash, settings)
    known = cache.load()
    hashes = [row_fingerprint(dataset[i]) for i in range(len(dataset))]
    missing = sorted({h: i for i, h in enumerate(hashes) if h not in known}.values())
    if missing:
        rows = dataset.select(missing)
        chosen, rejected = compute_reference_logps(model, processor, rows, settings, batch_size, device, progress)
        known.update({hashes[i]: (c, r) for i, c, r in zip(missing, chosen, rejected)})
        cache.save(known)
    out = dataset.remove_columns([c for c in REF_KEYS if c in dataset.column_names])
    out = out.add_column("ref_chosen_logps", [known[h][0] for h in hashes])
    out = out.add_column("ref_rejected_logps", [known[h][1] for h in hashes])
    return out


__all__ = ["RefSettings", "ReferenceCache", "attach_reference_logps", "autocast_context", "cache_key",
           "compute_reference_logps", "model_fingerprint", "row_fingerprint"]
