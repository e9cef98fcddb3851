"""A tiny random LLaVA and synthetic annotated prompts, for smoke tests and the speed benchmark.

`build_tiny_llava()` is a real LlavaForConditionalGeneration (SigLIP tower, 2-layer GELU projector, Llama language
model) with SmolLM2's tokenizer and the toy chat template, but only a few hundred thousand weights besides the
embedding: recipes run their 2 smoke steps in about a second. `synthetic_prompts(n)` makes AnnotatedPrompts with
solid-colour images and answers of different lengths and scores, which preference.build_* turn into the four
training datasets exactly as for real data.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from tokenizers import AddedToken
from transformers import AutoTokenizer, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, \
    SiglipVisionConfig

from mmalign_utils.chat_templates import TOY_CHAT_TEMPLATE
from mmalign_utils.models import ToyMLLMConfig, build_image_processor, load_smollm2, smollm2_cache_path
from mmalign_utils.preference import ATTRIBUTES, AnnotatedPrompt


@dataclass(frozen=True)
class TinyLlavaShape:
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    image_size: int = 32
    patch_size: int = 16  # (32 / 16)^2 = 4 image tokens
    vision_hidden_size: int = 32
    vision_layers: int = 1


def smollm2_tokenizer():
    """SmolLM2's tokenizer from the converted cache (converted once from the GGUF if absent)."""
    path = smollm2_cache_path()
    if not path.is_dir():
        load_smollm2()
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def build_tiny_llava(shape: TinyLlavaShape = TinyLlavaShape(), seed: int = 0,
                     dtype: torch.dtype = torch.float32) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A randomly initialised LLaVA of the toy's layout (tied embeddings, SigLIP without CLS) at a tiny size."""
    tokenizer = smollm2_tokenizer()
    tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False)], special_tokens=True)
    tokenizer.padding_side = "left"
    text_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = SiglipVisionConfig(
        hidden_size=shape.vision_hidden_size, intermediate_size=2 * shape.vision_hidden_size,
        num_hidden_layers=shape.vision_layers, num_attention_heads=2, image_size=shape.image_size,
        patch_size=shape.patch_size, vision_use_head=False,
    )
    n_image_tokens = (shape.image_size // shape.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision_config, text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=n_image_tokens,
        vision_feature_select_strategy="full", vision_feature_layer=-1, projector_hidden_act="gelu",
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = LlavaProcessor(
        image_processor=build_image_processor(ToyMLLMConfig(image_size=shape.image_size, patch_size=shape.patch_size)),
        tokenizer=tokenizer, patch_size=shape.patch_size, vision_feature_select_strategy="full",
        chat_template=TOY_CHAT_TEMPLATE, image_token="<image>", num_additional_image_tokens=0,
    )
    return model.to(dtype).eval(), processor


_COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
# Questions of different lengths, so that batches have left-padded prompts
_QUESTIONS = ("What colour is picture {i}?", "Picture {i}: which colour fills the whole image, from edge to edge?",
              "Name the colour of image {i}, please.")
_FILLER = ("It is clearly visible in the picture.", "The whole image is filled with it.",
           "There is nothing else in the scene.", "The shade is even from edge to edge.")


def synthetic_prompts(n: int, k: int = 4, seed: int = 0, image_size: int = 32, long_words: int = 12
                      ) -> list[AnnotatedPrompt]:
    """n prompts about solid-colour images, k answers each: the right colour at growing length, or a wrong one.

    Each question names its index ("What colour is picture 3?") and the questions differ in length (batches get
    left-padded prompts), so every row is distinct.
    Scores follow the answers (right colour: helpfulness/correctness 3-4; wrong: 0-1; verbosity grows with length),
    so the paper's pair rule keeps every prompt. `long_words` bounds how long the longest answers get.
    """
    from PIL import Image

    rng = random.Random(seed)
    names = list(_COLOURS)
    images = {name: Image.new("RGB", (image_size, image_size), rgb) for name, rgb in _COLOURS.items()}
    prompts = []
    for i in range(n):
        colour = names[i % len(names)]
        wrong = names[(i + 1 + rng.randrange(len(names) - 1)) % len(names)]
        answers, scores = [], []
        for j in range(k):
            right = j < k - 1
            extra = " ".join(_FILLER[: j % len(_FILLER)]).split()[:long_words]
            answer = f"The image is {colour if right else wrong}." + (" " + " ".join(extra) if extra else "")
            verbosity = min(4, len(answer.split()) // 4)
            helpful = (3 + (j % 2)) if right else rng.choice((0, 1))
            score = {"helpfulness": helpful, "correctness": 4 if right else 0, "coherence": 4,
                     "complexity": min(4, j), "verbosity": verbosity}
            answers.append(answer)
            scores.append({a: score[a] for a in ATTRIBUTES})
        prompts.append(AnnotatedPrompt(
            prompt_id=f"syn-{seed}-{i}", image=images[colour], question=_QUESTIONS[i % len(_QUESTIONS)].format(i=i),
            answers=answers, scores=scores, reference_answer=f"The image is {colour}.",
            judge_answer=f"It is {colour}.", source="synthetic", image_id=f"colour:{colour}",
        ))
    return prompts


__all__ = ["TinyLlavaShape", "build_tiny_llava", "smollm2_tokenizer", "synthetic_prompts"]
