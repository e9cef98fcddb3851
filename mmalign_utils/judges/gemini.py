"""Gemini through the google-genai SDK (`import google.genai`): text, inline images, structured JSON output.

The key is read from an environment variable when the judge is made and handed to the SDK; it is never kept on
this object, printed or put into an error message. The SDK's own retries are off (see `judges.retry`).
"""
from __future__ import annotations

import json
import os

from mmalign_utils.judges.base import Judge, JudgeReply, JudgeRequest, encode_image, read_api_key, redact
from mmalign_utils.judges.retry import TRANSPORT_ERRORS, error_for_status, parse_retry_after


class GeminiJudge(Judge):
    """`GeminiJudge("gemini-2.5-flash")`; `base_url` points the SDK at another endpoint (a proxy, a test server).

    `thinking_budget` caps Gemini 2.5's hidden reasoning tokens (0 turns it off on Flash; None = model default).
    Thinking tokens count against `request.max_tokens` and are billed as output: `output_tokens` includes them.
    """

    def __init__(self, model: str = "gemini-2.5-flash", api_key_env: str = "GEMINI_API_KEY",
                 base_url: str | None = None, timeout_s: float = 120.0, thinking_budget: int | None = None,
                 api_version: str | None = None, cache=None):
        super().__init__(cache=cache)
        from google import genai
        from google.genai import types

        self.model = model
        self.api_key_env = api_key_env
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.thinking_budget = thinking_budget
        self.judge_id = f"gemini:{model}"
        self._types = types
        http_options = types.HttpOptions(
            base_url=base_url, api_version=api_version, timeout=max(1, int(timeout_s * 1000)),
            retry_options=types.HttpRetryOptions(attempts=1),  # one try: our RetryPolicy decides
        )
        self._client = genai.Client(api_key=read_api_key(api_key_env, "GeminiJudge"), vertexai=False,
                                    http_options=http_options)

    def __repr__(self) -> str:
        where = f", base_url={self.base_url!r}" if self.base_url else ""
        return f"GeminiJudge(model={self.model!r}, api_key_env={self.api_key_env!r}{where})"

    def _contents(self, request: JudgeRequest) -> tuple[list, str | None]:
        types = self._types
        system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system") or None
        turns = [m for m in request.messages if m["role"] != "system"]
        last_user = max((i for i, m in enumerate(turns) if m["role"] == "user"), default=None)
        if request.images and last_user is None:
            raise ValueError("JudgeRequest has images but no user message to attach them to")
        contents = []
        for i, message in enumerate(turns):
            parts = []
            if i == last_user:  # images first, then the text that refers to them
                for image in request.images:
                    data, mime = encode_image(image)
                    parts.append(types.Part.from_bytes(data=data, mime_type=mime))
            parts.append(types.Part.from_text(text=message["content"]))
            contents.append(types.Content(role="model" if message["role"] == "assistant" else "user", parts=parts))
        return contents, system

    def _call(self, request: JudgeRequest) -> JudgeReply:
        from google.genai import errors

        types = self._types
        contents, system = self._contents(request)
        config = types.GenerateContentConfig(
            temperature=request.temperature, max_output_tokens=request.max_tokens, system_instruction=system,
            candidate_count=1,
        )
        if request.response_schema:
            config.response_mime_type = "application/json"
            config.response_json_schema = request.response_schema
        if self.thinking_budget is not None:
            config.thinking_config = types.ThinkingConfig(thinking_budget=self.thinking_budget)
        key = os.environ.get(self.api_key_env)
        try:
            response = self._client.models.generate_content(model=self.model, contents=contents, config=config)
        except errors.APIError as error:
            headers = getattr(getattr(error, "response", None), "headers", None) or {}
            raise error_for_status(error.code, redact(f"Gemini {self.model}: {error}", key),
                                   parse_retry_after(headers.get("retry-after")), self.api_key_env) from None
        except TRANSPORT_ERRORS as error:
            raise error_for_status(None, redact(f"Gemini {self.model}: {type(error).__name__}: {error}", key)) \
                from None
        except (json.JSONDecodeError, errors.UnknownApiResponseError) as error:  # a body that is not JSON
            raise error_for_status(None, redact(f"Gemini {self.model}: unreadable response: {error}", key)) \
                from None
        usage = response.usage_metadata
        thoughts = (usage.thoughts_token_count or 0) if usage else 0
        candidate = response.candidates[0] if response.candidates else None
        finish = getattr(candidate, "finish_reason", None)
        block = getattr(response.prompt_feedback, "block_reason", None) if response.prompt_feedback else None
        text = "".join(part.text for part in (candidate.content.parts if candidate and candidate.content
                                              and candidate.content.parts else [])
                       if part.text and not part.thought)
        raw = {"model_version": response.model_version, "finish_reason": str(finish) if finish else None,
               "thoughts_tokens": thoughts}
        if block:
            raw["block_reason"] = str(block)
        return JudgeReply(
            text=text, judge_id=self.judge_id,
            input_tokens=(usage.prompt_token_count or 0) if usage else 0,
            output_tokens=((usage.candidates_token_count or 0) + thoughts) if usage else 0,
            raw=json.loads(json.dumps(raw, default=str)),
        )
