"""The optional vLLM backend, against a stand-in `vllm` module (vLLM itself needs an NVIDIA GPU): what generate and
sample_k send it, what they return, and the errors that say what to do."""
import sys
import types

import pytest
from PIL import Image

from mmalign_utils.generate import Conversation, GenerationSettings, generate, sample_k, score_options
from mmalign_utils.vllm_backend import VLLM_MISSING, load_vllm


class FakeLLM:
    def __init__(self, model, **kwargs):
        self.model, self.kwargs, self.calls = model, kwargs, []

    def generate(self, requests, params, use_tqdm=True):
        self.calls.append((requests, params))
        answer = lambda i, j: types.SimpleNamespace(text=f" answer {i}.{j} ")  # noqa: E731
        return [types.SimpleNamespace(outputs=[answer(i, j) for j in range(params.n)]) for i in range(len(requests))]


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.SimpleNamespace(LLM=FakeLLM, SamplingParams=lambda **kw: types.SimpleNamespace(**kw))
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


@pytest.fixture
def processor():
    class Template:  # renders like a chat template: the prompt text vLLM must receive
        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            parts = messages[-1]["content"]
            text = parts if isinstance(parts, str) else "".join(
                "<image>\n" if p["type"] == "image" else p["text"] for p in parts)
            return f"USER: {text} ASSISTANT:"
    return Template()


def test_generate_sends_rendered_prompts_and_images_and_keeps_the_order(fake_vllm, processor):
    engine = load_vllm("llava-hf/llava-1.5-7b-hf", tensor_parallel_size=2)
    assert engine.llm.kwargs["trust_remote_code"] is False and engine.llm.kwargs["tensor_parallel_size"] == 2
    image = Image.new("RGB", (8, 8))
    convs = [Conversation.user("What is here?", image), Conversation.user("Say hi.")]
    answers = generate(engine, processor, convs, GenerationSettings(max_new_tokens=7), progress=False)
    assert answers == ["answer 0.0", "answer 1.0"]
    requests, params = engine.llm.calls[0]
    assert requests[0] == {"prompt": "USER: <image>\nWhat is here? ASSISTANT:", "multi_modal_data": {"image": image}}
    assert requests[1] == {"prompt": "USER: Say hi. ASSISTANT:"}
    assert (params.n, params.temperature, params.top_p, params.max_tokens) == (1, 0.0, 1.0, 7)  # greedy


def test_sample_k_asks_for_k_seeded_samples(fake_vllm, processor):
    engine = load_vllm("some/model")
    out = sample_k(engine, processor, [Conversation.user("Describe.")], k=4, temperature=1.2, top_p=0.9, seed=3,
                   max_new_tokens=64, progress=False)
    assert out == [[f"answer 0.{j}" for j in range(4)]]
    _, params = engine.llm.calls[0]
    assert (params.n, params.temperature, params.top_p, params.seed, params.max_tokens) == (4, 1.2, 0.9, 3, 64)


def test_option_scoring_and_remote_code_are_refused(fake_vllm, processor):
    engine = load_vllm("some/model")
    with pytest.raises(ValueError, match="answer_mode='generate'"):
        score_options(engine, processor, [Conversation.user("Yes or no?")], ["Yes", "No"])
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_vllm("some/model", trust_remote_code=True)


def test_a_missing_vllm_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(ImportError, match="pip install vllm") as err:
        load_vllm("some/model")
    assert str(err.value) == VLLM_MISSING
