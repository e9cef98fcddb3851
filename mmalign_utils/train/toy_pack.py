"""A finished toy LLaVA build as its trained parts, so a fresh machine need not spend hours rebuilding it.

The build (`train.vit.build_toy_llava`) starts from SmolLM2's GGUF, which every install has, and trains a vision
tower, a projector and LoRA factors on the language model. A pack keeps only those (about 45 MB instead of the
265 MB model) plus the processor files and the build's report, and is exact: unpacking rebuilds the starting
model with `models.build_toy_mllm`, loads the trained parts and merges the LoRA factors with the build's own
`merge_stage2_lora`, then checks every tensor of the result against the SHA-256 the pack recorded from the
build's saved model. `pack_toy_llava` runs that check before it writes anything.

    mmalign pack-toy --artifacts-dir /work/artifacts --out packs/toy_llava     # after a finished build
    ensure_toy_llava(ctx)    # no finished build under the artifacts folder: unpacks packs/toy_llava when the
                             # pack was built with the configuration asked for, else builds
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

PACK_FORMAT = 1
EMBEDDING = "model.language_model.embed_tokens.weight"
# The rows the toy LLaVA adds to SmolLM2's embedding (<image>) start as a mean over the vocabulary: a reduction,
# whose last bits may depend on the CPU, so the pack carries them as saved.
ADDED_ROWS_KEY = "added_embedding_rows"
# The repository's pack of the default build (seed 0), if a session has shipped one.
DEFAULT_PACK = Path(__file__).resolve().parents[2] / "packs" / "toy_llava"
_SKIP_FILES = {"model.safetensors"}  # rebuilt; everything else in model/ is copied as it is


def tensor_digests(safetensors_file: str | Path) -> dict[str, str]:
    """SHA-256 of each tensor (dtype, shape and bytes) in a safetensors file."""
    from safetensors import safe_open

    digests = {}
    with safe_open(str(safetensors_file), framework="pt") as f:
        for name in sorted(f.keys()):
            t = f.get_tensor(name).contiguous()
            h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            digests[name] = h.hexdigest()
    return digests


def state_name(file_name: str) -> str:
    """A tensor's name in the model's state_dict from its name in a saved LLaVA safetensors file (transformers
    saves LLaVA under its older layout: "language_model.model.X" for "model.language_model.X")."""
    if file_name.startswith("language_model.model."):
        return "model.language_model." + file_name[len("language_model.model."):]
    if file_name.startswith("language_model.lm_head."):
        return file_name[len("language_model."):]
    if file_name.startswith(("vision_tower.", "multi_modal_projector.")):
        return "model." + file_name
    return file_name


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parents[2],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _starting_model(model_config: dict[str, Any], frozen_lm_bf16: bool):
    """The model the build started stage 1 from, before training: SmolLM2 + untrained tower and projector."""
    from mmalign_utils.models import ToyMLLMConfig, build_toy_mllm
    from mmalign_utils.train.vit import store_frozen_lm_in_bf16

    model, processor = build_toy_mllm(ToyMLLMConfig(**model_config))
    if frozen_lm_bf16:
        store_frozen_lm_in_bf16(model)
    return model, processor


def _merged_model(model, lora_meta: dict[str, Any], adapter: dict[str, torch.Tensor]):
    """LoRA factors put on the language model and merged exactly as the build merged them."""
    from peft import LoraConfig, get_peft_model

    from mmalign_utils.train.vit import merge_stage2_lora

    config = LoraConfig(r=lora_meta["r"], lora_alpha=lora_meta["alpha"], lora_dropout=lora_meta["dropout"],
                        bias="none", target_modules=lora_meta["targets"])
    peft_model = get_peft_model(model, config)
    params = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    if set(params) != set(adapter):
        missing, extra = sorted(set(params) - set(adapter)), sorted(set(adapter) - set(params))
        raise ValueError(f"the packed LoRA factors do not fit the model (missing {missing[:3]}, unknown {extra[:3]})")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(adapter[name])
    return merge_stage2_lora(peft_model)


def _rebuild(pack: dict[str, Any], trained: dict[str, torch.Tensor], adapter: dict[str, torch.Tensor],
             processor_dir: Path, out_model_dir: Path) -> dict[str, str]:
    """Starting model + trained tensors + merged LoRA, saved in bf16 as the build saved it; the tensor digests."""
    from mmalign_utils.models import save_mllm

    model, processor = _starting_model(pack["model_config"], pack["lora"]["frozen_lm_bf16"])
    state = model.state_dict()
    trained = dict(trained)
    added_rows = trained.pop(ADDED_ROWS_KEY, None)
    unknown = sorted(set(trained) - set(state))
    if unknown:
        raise ValueError(f"packed tensors {unknown[:3]} are not in the toy LLaVA built from the pack's config")
    with torch.no_grad():
        for name, value in trained.items():
            state[name].copy_(value)
        if added_rows is not None:
            state[EMBEDDING][pack["added_embedding_rows_from"]:].copy_(added_rows)
    merged = _merged_model(model, pack["lora"], adapter)
    save_mllm(merged.to(torch.bfloat16), processor, out_model_dir)
    for f in processor_dir.iterdir():  # the build's own processor files, byte for byte
        if f.is_file() and f.name not in _SKIP_FILES:
            shutil.copy2(f, out_model_dir / f.name)
    return tensor_digests(out_model_dir / "model.safetensors")


def _check_digests(got: dict[str, str], want: dict[str, str], where: str) -> None:
    wrong = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
    if wrong:
        raise RuntimeError(f"{where}: {len(wrong)} of {len(want)} tensors differ from the build's saved model "
                           f"(first: {wrong[:4]}); the pack cannot reproduce it exactly")


def pack_toy_llava(build_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the pack of the finished build in `build_dir` (model/, lora/, report.json, build_config.json) to
    `out_dir`, after checking that unpacking it gives the saved model tensor for tensor. Returns pack.json."""
    from safetensors.torch import load_file, save_file

    build_dir, out_dir = Path(build_dir), Path(out_dir)
    model_file, lora_dir = build_dir / "model" / "model.safetensors", build_dir / "lora"
    for needed in (model_file, build_dir / "report.json", build_dir / "build_config.json",
                   lora_dir / "adapter.safetensors", lora_dir / "lora.json"):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} is missing: pack a finished build made by `mmalign build-toy` (builds "
                                    "before the seventeenth session did not keep lora/ and cannot be packed)")
    build_config = json.loads((build_dir / "build_config.json").read_text())
    lora_meta = json.loads((lora_dir / "lora.json").read_text())
    want = tensor_digests(model_file)
    saved = {state_name(k): v for k, v in load_file(str(model_file)).items()}
    start, _ = _starting_model(build_config["model"], lora_meta["frozen_lm_bf16"])
    start_state = {k: v.to(torch.bfloat16) for k, v in start.state_dict().items()}
    del start
    unknown = sorted(set(saved) - set(start_state))
    if unknown:
        raise RuntimeError(f"{model_file} holds tensors the toy LLaVA of its build config lacks: {unknown[:3]}")
    # Trained outside the LoRA factors: every saved tensor that is not a LoRA-adapted linear weight and differs
    # from the starting model's (the tower and the projector).
    adapted = re.compile(lora_meta["targets"])
    trained = {name: value for name, value in saved.items()
               if not (adapted.fullmatch(name.rsplit(".weight", 1)[0]) and name.endswith(".weight"))
               and not (name in start_state and torch.equal(start_state[name], value))}
    rows_from = int(json.loads((model_file.parent / "config.json").read_text())["image_token_index"])
    if EMBEDDING not in trained:
        trained[ADDED_ROWS_KEY] = saved[EMBEDDING][rows_from:].clone()
    adapter = load_file(str(lora_dir / "adapter.safetensors"))
    pack = {"format": PACK_FORMAT, "model_config": build_config["model"], "build_config": build_config,
            "lora": lora_meta, "tensor_sha256": want, "trained_tensors": sorted(trained),
            "added_embedding_rows_from": rows_from,
            "packed_from": str(build_dir), "commit": _git_commit(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    with tempfile.TemporaryDirectory() as tmp:
        got = _rebuild(pack, trained, adapter, model_file.parent, Path(tmp) / "model")
    _check_digests(got, want, f"packing {build_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in trained.items()}, str(out_dir / "trained.safetensors"))
    save_file({k: v.contiguous() for k, v in adapter.items()}, str(out_dir / "adapter.safetensors"))
    processor_out = out_dir / "processor"
    processor_out.mkdir(exist_ok=True)
    for f in model_file.parent.iterdir():
        if f.is_file() and f.name not in _SKIP_FILES:
            shutil.copy2(f, processor_out / f.name)
    for name in ("report.json", "vqa_eval.csv", "build_config.json"):
        if (build_dir / name).is_file():
            shutil.copy2(build_dir / name, out_dir / name)
    (out_dir / "pack.json").write_text(json.dumps(pack, indent=1))
    return pack


def pack_matches(pack_dir: str | Path, build_config: dict[str, Any]) -> bool:
    """Whether the pack holds a build of `build_config` (asdict of a VITConfig; bf16_frozen_lm and the other
    settings that do not change what is trained aside)."""
    from mmalign_utils.train.vit import RESUMABLE_ACROSS

    path = Path(pack_dir) / "pack.json"
    if not path.is_file():
        return False
    packed = json.loads(path.read_text())["build_config"]
    asked = json.loads(json.dumps(build_config))
    return all(packed.get(k) == asked.get(k) for k in set(packed) | set(asked) if k not in RESUMABLE_ACROSS)


def unpack_toy_llava(pack_dir: str | Path, out_dir: str | Path) -> Path:
    """Rebuild the packed toy LLaVA into `out_dir` (model/, report.json, ...), checked tensor for tensor against
    the build's saved model. Returns `out_dir`."""
    from safetensors.torch import load_file

    pack_dir, out_dir = Path(pack_dir), Path(out_dir)
    pack = json.loads((pack_dir / "pack.json").read_text())
    if pack.get("format") != PACK_FORMAT:
        raise ValueError(f"{pack_dir}: pack format {pack.get('format')}, this mmalign reads {PACK_FORMAT}")
    got = _rebuild(pack, load_file(str(pack_dir / "trained.safetensors")),
                   load_file(str(pack_dir / "adapter.safetensors")), pack_dir / "processor", out_dir / "model")
    _check_digests(got, pack["tensor_sha256"], f"unpacking {pack_dir}")
    for name in ("report.json", "vqa_eval.csv", "build_config.json"):
        if (pack_dir / name).is_file():
            shutil.copy2(pack_dir / name, out_dir / name)
    return out_dir


def default_pack_for(build_config: dict[str, Any]) -> Path | None:
    """The repository's pack when it holds a build of `build_config`, else None."""
    return DEFAULT_PACK if pack_matches(DEFAULT_PACK, build_config) else None


__all__ = ["DEFAULT_PACK", "PACK_FORMAT", "default_pack_for", "pack_matches", "pack_toy_llava", "state_name",
           "tensor_digests", "unpack_toy_llava"]
