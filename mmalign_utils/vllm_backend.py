"""Optional vLLM backend for answer generation on GPUs (paper profile): the same `generate` call, served by vLLM.

    engine = load_vllm("llava-hf/llava-1.5-13b-hf", tensor_parallel_size=2)
    answers = generate(engine, processor, conversations, GenerationSettings(max_new_tokens=512))

`generate` hands a `VLLMEngine` its conversations: each is rendered with the processor's chat template (the
prompt our own engine would prefill: `<image>` once, vLLM expands it for LLaVA) and sent with its PIL images;
greedy settings become temperature 0, sampled ones keep temperature, top-p, the number of samples and the seed.
Closed questions need free generation here (`answer_mode="generate"`): option scoring reads the logits of our
own forward pass, which vLLM does not expose in the same form. vLLM is not a dependency (GPU-only, large);
`pip install vllm` where it is wanted. Weights load as vLLM loads them (safetensors); remote code stays off.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

VLLM_MISSING = ("the vLLM backend needs the vllm package, which runs on NVIDIA GPUs: `pip install vllm` "
                "(not in requirements.txt); without it, generate with the model itself (load_mllm)")


def _import_vllm():
    try:
        import vllm
    except ImportError as err:
        raise ImportError(VLLM_MISSING) from err
    return vllm


@dataclass
class VLLMEngine:
    """A vllm.LLM and the name it was loaded from; pass it to `generate` in place of a model."""

    llm: Any
    name: str
    engine_kwargs: dict = field(default_factory=dict)

    def generate(self, prompts: Sequence[str], images: Sequence[list], settings, progress: bool = True
                 ) -> list[list[str]]:
        """num_samples (1 when greedy) answers for each prompt, in order."""
        vllm = _import_vllm()
        k = 1 if settings.greedy else settings.num_samples
        params = vllm.SamplingParams(n=k, temperature=0.0 if settings.greedy else settings.temperature,
                                     top_p=1.0 if settings.greedy else settings.top_p,
                                     max_tokens=settings.max_new_tokens, seed=settings.seed)
        requests = []
        for prompt, imgs in zip(prompts, images):
            request: dict[str, Any] = {"prompt": prompt}
            if imgs:
                request["multi_modal_data"] = {"image": imgs[0] if len(imgs) == 1 else list(imgs)}
            requests.append(request)
        outputs = self.llm.generate(requests, params, use_tqdm=progress)
        return [[o.text.strip() for o in out.outputs] for out in outputs]


def load_vllm(name_or_path: str, dtype: str = "bfloat16", seed: int = 0, max_images_per_prompt: int = 1,
              **engine_kwargs: Any) -> VLLMEngine:
    """A vLLM engine for `name_or_path` (tensor_parallel_size, max_model_len, gpu_memory_utilization ... pass
    through). trust_remote_code stays off."""
    if engine_kwargs.get("trust_remote_code"):
        raise ValueError("trust_remote_code stays off in mmalign")
    vllm = _import_vllm()
    kwargs = {"dtype": dtype, "seed": seed, "limit_mm_per_prompt": {"image": max_images_per_prompt},
              "trust_remote_code": False, **engine_kwargs}
    return VLLMEngine(llm=vllm.LLM(model=name_or_path, **kwargs), name=name_or_path, engine_kwargs=kwargs)
