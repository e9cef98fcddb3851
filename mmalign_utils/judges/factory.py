"""`make_judge("gemini:gemini-2.5-flash")`: one string picks a judge, so notebooks and the CLI take it as a parameter.

Specs:
  gemini:MODEL                   Gemini API, key from $GEMINI_API_KEY
  gemini:MODEL@URL               the same SDK against another endpoint
  openai:MODEL                   OpenAI, key from $OPENAI_API_KEY
  openai:MODEL@URL               an OpenAI-compatible server (vLLM, llama.cpp), e.g.
                                 openai:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1
  local:PATH                     a causal LM saved with safetensors under PATH (text only), run in this process
  scripted:echo                  replies with the last user message (dry runs)
  scripted:const:TEXT            replies TEXT to everything
  scripted:NAME + replies=...    a ScriptedJudge with the given replies (a list or a function of the request)
  oracle[:ARGS]                  the ShapesWorld oracle, registered by mmalign_utils.judges.oracle

Keys come only from environment variables. Other modules add prefixes with `register_backend`.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmalign_utils.judges.base import Judge, JudgeConfigError, ScriptedJudge
from mmalign_utils.judges.retry import RetryingJudge, RetryPolicy

Builder = Callable[..., Judge]  # builder(rest_of_spec: str, cache=..., **kwargs) -> Judge

_BACKENDS: dict[str, Builder] = {}
# Prefixes whose module registers itself when imported (so importing the factory stays cheap and acyclic).
_LAZY_MODULES = {"oracle": "mmalign_utils.judges.oracle"}


def register_backend(prefix: str, builder: Builder) -> None:
    """Make `make_judge("PREFIX:rest")` call `builder("rest", cache=cache, **kwargs)`."""
    _BACKENDS[prefix] = builder


def _split_url(rest: str) -> tuple[str, str | None]:
    model, sep, url = rest.rpartition("@")
    if sep and url.startswith(("http://", "https://")):
        return model, url
    return rest, None


def _gemini(rest: str, cache=None, **kwargs: Any) -> Judge:
    from mmalign_utils.judges.gemini import GeminiJudge

    model, url = _split_url(rest)
    return GeminiJudge(model=model or "gemini-2.5-flash", base_url=url, cache=cache, **kwargs)


def _openai(rest: str, cache=None, **kwargs: Any) -> Judge:
    from mmalign_utils.judges.openai_compat import OpenAICompatJudge

    model, url = _split_url(rest)
    if not model:
        raise JudgeConfigError("openai judge spec needs a model name, e.g. openai:gpt-4o-mini")
    return OpenAICompatJudge(model=model, base_url=url, cache=cache, **kwargs)


def _local(rest: str, cache=None, **kwargs: Any) -> Judge:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmalign_utils.judges.local import LocalTransformersJudge

    path = Path(rest)
    if not path.is_dir():
        raise JudgeConfigError(f"local judge: {path} is not a directory holding a saved model (safetensors)")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=False).eval()
    return LocalTransformersJudge(model, tokenizer, judge_id=f"local:{path.name}", cache=cache, **kwargs)


def _scripted(rest: str, cache=None, replies=None, **kwargs: Any) -> Judge:
    if replies is None:
        if rest == "echo":
            def replies(request):
                return next(m["content"] for m in reversed(request.messages) if m["role"] == "user")
        elif rest.startswith("const:"):
            text = rest[len("const:"):]

            def replies(request):
                return text
        else:
            raise JudgeConfigError(f"scripted:{rest}: use scripted:echo, scripted:const:TEXT, or pass replies=")
    return ScriptedJudge(replies, judge_id=f"scripted:{rest}", cache=cache, **kwargs)


register_backend("gemini", _gemini)
register_backend("openai", _openai)
register_backend("local", _local)
register_backend("scripted", _scripted)


def make_judge(spec: str, cache_path: str | Path | None = None, retry: RetryPolicy | None = None,
               **kwargs: Any) -> Judge:
    """Build the judge named by `spec` (see the module docstring).

    cache_path: a SQLite file; every reply is stored there and an identical request is answered from it.
    retry: wrap the judge so `complete` retries 429/5xx/timeouts (the annotator has its own retries: leave None).
    kwargs go to the backend's constructor (e.g. timeout_s=30, thinking_budget=0, replies=[...]).
    """
    prefix, _, rest = spec.partition(":")
    if prefix not in _BACKENDS and prefix in _LAZY_MODULES:
        try:
            importlib.import_module(_LAZY_MODULES[prefix])
        except ImportError as error:
            raise JudgeConfigError(f"judge spec {spec!r}: could not import {_LAZY_MODULES[prefix]} ({error})") \
                from None
    if prefix not in _BACKENDS:
        known = sorted(set(_BACKENDS) | set(_LAZY_MODULES))
        raise JudgeConfigError(f"unknown judge spec {spec!r}: it must start with one of {', '.join(known)} "
                               "followed by ':' (e.g. gemini:gemini-2.5-flash)")
    cache = None
    if cache_path is not None:
        from mmalign_utils.judges.cache import SQLiteJudgeCache

        cache = SQLiteJudgeCache(cache_path)
    judge = _BACKENDS[prefix](rest, cache=cache, **kwargs)
    return RetryingJudge(judge, retry) if retry is not None else judge
