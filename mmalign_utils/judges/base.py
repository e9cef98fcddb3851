"""The judge interface every benchmark scorer and the annotator talk to.

A judge turns a `JudgeRequest` (chat messages, optional images, decoding parameters, a repeat index) into raw
reply text. Scorers never call an API directly: they build requests, call `judge.complete(request)` and parse
the text themselves, so the same scorer runs against Gemini, GPT-4, a local model or a scripted fake.
"""
from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class JudgeRequest:
    """One judge call. `messages` are OpenAI-style dicts: {"role": "system"|"user"|"assistant", "content": str}.

    `images` are PIL images or file paths attached to the last user message (for vision judges).
    `repeat` distinguishes intentional repeats of the same prompt (N-run means), so the cache keeps them apart.
    """

    messages: list[dict[str, str]]
    images: Sequence[Any] = ()
    temperature: float = 0.0
    max_tokens: int = 1024
    repeat: int = 0
    response_schema: dict | None = None  # JSON schema for structured output, where the backend supports it
    tag: str = ""  # free text for logs (benchmark / item id); not part of the cache key
    # The task in structured form, for judges that do not read prose (the ShapesWorld oracle), e.g.
    # {"task": "helpsteer_annotation", "question": ..., "answers": [...], "item": {...}}. Not part of the cache key:
    # it must describe the same task as `messages`.
    payload: dict = field(default_factory=dict)

    @classmethod
    def from_prompt(cls, prompt: str, system: str | None = None, **kwargs) -> JudgeRequest:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return cls(messages=messages, **kwargs)

    def prompt_hash(self) -> str:
        """SHA-256 over the messages and the images' bytes: what the judge saw."""
        h = hashlib.sha256(json.dumps(self.messages, sort_keys=True, ensure_ascii=False).encode())
        for image in self.images:
            h.update(_image_fingerprint(image))
        return h.hexdigest()

    def decoding_key(self) -> str:
        schema = json.dumps(self.response_schema, sort_keys=True) if self.response_schema else ""
        return json.dumps({"temperature": self.temperature, "max_tokens": self.max_tokens, "schema": schema},
                          sort_keys=True)


@dataclass
class JudgeReply:
    text: str
    judge_id: str
    cached: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    raw: dict = field(default_factory=dict)


class JudgeError(RuntimeError):
    """A backend refused or failed a request. Messages never contain the API key."""


class TransientJudgeError(JudgeError):
    """Worth retrying later: rate limit (429), server error (5xx), timeout or lost connection.

    `retry_after` is the server's Retry-After hint in seconds, when it sent one.
    """

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class JudgeConfigError(JudgeError):
    """The judge cannot work at all (missing API key, unknown spec, authentication refused): stop the run."""


def read_api_key(env_var: str, what: str) -> str:
    """The key in `env_var`; a JudgeConfigError naming the variable (never a value) when it is unset."""
    key = os.environ.get(env_var, "").strip()
    if not key:
        raise JudgeConfigError(f"{what} needs an API key in the environment variable {env_var}, which is not set. "
                               f"Run `export {env_var}=...` before starting, or pick another judge spec.")
    return key


def redact(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` replaced, for messages built from SDK exceptions."""
    return text.replace(secret, "[REDACTED]") if secret else text


def encode_image(image: Any) -> tuple[bytes, str]:
    """(bytes, MIME type) of a PIL image, a file path or raw bytes, for backends that upload images.

    Files and bytes are sent as they are (their format is read from the content); PIL images as PNG.
    """
    import io

    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            data = f.read()
    elif isinstance(image, bytes):
        data = image
    elif hasattr(image, "save"):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue(), "image/png"
    else:
        raise TypeError(f"cannot send image of type {type(image).__name__}: give a PIL image, a path or bytes")
    with Image.open(io.BytesIO(data)) as opened:
        fmt = (opened.format or "PNG").lower()
    return data, f"image/{'jpeg' if fmt == 'jpg' else fmt}"


def _image_fingerprint(image: Any) -> bytes:
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            return hashlib.sha256(f.read()).digest()
    if isinstance(image, bytes):
        return hashlib.sha256(image).digest()
    if hasattr(image, "tobytes"):  # PIL image
        return hashlib.sha256(image.tobytes() + repr((image.mode, image.size)).encode()).digest()
    raise TypeError(f"cannot fingerprint image of type {type(image).__name__}")


class Judge(ABC):
    """Base class. Subclasses implement `_call`; callers use `complete`.

    `judge_id` names the backend and model version (e.g. "gemini:gemini-2.5-flash", "openai:gpt-4-0613",
    "scripted:test"); it is stored with every score.
    """

    judge_id: str = "abstract"

    def __init__(self, cache=None):
        self.cache = cache  # get(judge_id, request) -> JudgeReply|None; put(judge_id, request, reply)
        self.calls = 0

    @abstractmethod
    def _call(self, request: JudgeRequest) -> JudgeReply:
        """Send one request to the backend and return its raw reply."""

    def complete(self, request: JudgeRequest) -> JudgeReply:
        if self.cache is not None:
            hit = self.cache.get(self.judge_id, request)
            if hit is not None:
                return hit
        reply = self._call(request)
        self.calls += 1
        if self.cache is not None:
            self.cache.put(self.judge_id, request, reply)
        return reply

    def complete_text(self, prompt: str, system: str | None = None, **kwargs) -> str:
        return self.complete(JudgeRequest.from_prompt(prompt, system=system, **kwargs)).text


class ScriptedJudge(Judge):
    """A fake judge for tests: replies come from a list (in call order) or from a function of the request.

    Every request it receives is kept in `requests`, so tests can assert what a scorer sent.
    """

    def __init__(self, replies: Iterable[str] | Callable[[JudgeRequest], str], judge_id: str = "scripted:test",
                 cache=None):
        super().__init__(cache=cache)
        self.judge_id = judge_id
        self._fn = replies if callable(replies) else None
        self._queue = None if callable(replies) else list(replies)
        self.requests: list[JudgeRequest] = []

    def _call(self, request: JudgeRequest) -> JudgeReply:
        self.requests.append(request)
        if self._fn is not None:
            text = self._fn(request)
        else:
            if not self._queue:
                raise RuntimeError(f"ScriptedJudge ran out of replies after {len(self.requests) - 1} calls")
            text = self._queue.pop(0)
        return JudgeReply(text=text, judge_id=self.judge_id)
