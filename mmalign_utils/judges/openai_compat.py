"""Any OpenAI-compatible chat completions endpoint through the openai SDK: OpenAI itself (GPT-4, GPT-4o) or a
local server (vLLM, llama.cpp, SGLang) given by `base_url`.

Images go as base64 data URLs in the last user message. A response schema is sent as
`response_format={"type": "json_schema", ...}` (vLLM turns it into guided decoding). The SDK's retries are off.
"""
from __future__ import annotations

import base64
import json
import os
from urllib.parse import urlparse

from mmalign_utils.judges.base import Judge, JudgeReply, JudgeRequest, encode_image, read_api_key, redact
from mmalign_utils.judges.retry import TRANSPORT_ERRORS, error_for_status, parse_retry_after

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


class OpenAICompatJudge(Judge):
    """`OpenAICompatJudge("gpt-4o-mini")`, or a local server:
    `OpenAICompatJudge("Qwen/Qwen2.5-7B-Instruct", "http://127.0.0.1:8000/v1")`.

    The key comes from `api_key_env`. A server on this machine (localhost) usually wants none: if the variable is
    unset there, the placeholder "EMPTY" is sent. `token_limit_field` is "max_completion_tokens" for OpenAI
    (newer models refuse "max_tokens") and "max_tokens" for other servers, unless given.
    `strict_schema` asks OpenAI to enforce the schema exactly (the schema must then follow OpenAI's strict subset).
    """

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = 120.0, token_limit_field: str | None = None, strict_schema: bool = False,
                 cache=None):
        super().__init__(cache=cache)
        import openai

        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.strict_schema = strict_schema
        self.token_limit_field = token_limit_field or ("max_completion_tokens" if base_url is None else "max_tokens")
        self.judge_id = f"openai:{model}" if base_url is None else f"openai:{model}@{base_url}"
        local = base_url is not None and urlparse(base_url).hostname in _LOCAL_HOSTS
        key = os.environ.get(api_key_env, "").strip() if local else read_api_key(api_key_env, "OpenAICompatJudge")
        self._client = openai.OpenAI(api_key=key or "EMPTY", base_url=base_url, max_retries=0, timeout=timeout_s)

    def __repr__(self) -> str:
        where = f", base_url={self.base_url!r}" if self.base_url else ""
        return f"OpenAICompatJudge(model={self.model!r}, api_key_env={self.api_key_env!r}{where})"

    @staticmethod
    def _messages(request: JudgeRequest) -> list[dict]:
        last_user = max((i for i, m in enumerate(request.messages) if m["role"] == "user"), default=None)
        if request.images and last_user is None:
            raise ValueError("JudgeRequest has images but no user message to attach them to")
        messages: list[dict] = []
        for i, message in enumerate(request.messages):
            if i == last_user and request.images:
                parts: list[dict] = []
                for image in request.images:
                    data, mime = encode_image(image)
                    url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
                    parts.append({"type": "image_url", "image_url": {"url": url}})
                parts.append({"type": "text", "text": message["content"]})
                messages.append({"role": "user", "content": parts})
            else:
                messages.append({"role": message["role"], "content": message["content"]})
        return messages

    def _call(self, request: JudgeRequest) -> JudgeReply:
        import openai

        kwargs: dict = {"model": self.model, "messages": self._messages(request), "temperature": request.temperature,
                        self.token_limit_field: request.max_tokens, "n": 1}
        if request.response_schema:
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "judge_reply", "schema": request.response_schema, "strict": self.strict_schema}}
        key = os.environ.get(self.api_key_env)
        try:
            response = self._client.chat.completions.create(**kwargs)
        except openai.APIStatusError as error:
            raise error_for_status(error.status_code, redact(f"{self.judge_id}: {error}", key),
                                   parse_retry_after(error.response.headers.get("retry-after")),
                                   self.api_key_env) from None
        except (openai.APIConnectionError, *TRANSPORT_ERRORS) as error:  # includes APITimeoutError
            raise error_for_status(None, redact(f"{self.judge_id}: {type(error).__name__}: {error}", key)) from None
        except (json.JSONDecodeError, openai.APIResponseValidationError) as error:  # a body that is not JSON
            raise error_for_status(None, redact(f"{self.judge_id}: unreadable response: {error}", key)) from None
        choice = response.choices[0] if response.choices else None
        usage = response.usage
        return JudgeReply(
            text=(choice.message.content or "") if choice else "", judge_id=self.judge_id,
            input_tokens=(usage.prompt_tokens or 0) if usage else 0,
            output_tokens=(usage.completion_tokens or 0) if usage else 0,
            raw={"model_version": response.model, "finish_reason": choice.finish_reason if choice else None},
        )
