"""A scriptable fake of the two judge APIs, on 127.0.0.1, for tests that must not touch the internet.

It speaks just enough of
  (a) the Gemini REST API that google-genai calls: POST /{version}/models/{model}:generateContent
  (b) the OpenAI chat completions API: POST /v1/chat/completions
for the real `google.genai` and `openai` clients to accept its replies.

What it answers is decided per request, in this order:
  1. the next entry of `server.script` (a list the test fills with `Action`s), if any is left;
  2. otherwise `server.responder(request) -> Action | str` (a str is shorthand for a normal reply with that text).
Actions can be a normal reply, an HTTP error (429 with Retry-After, 500, ...), a sleep before replying (to
trigger client timeouts) or a body that is not JSON at all.

Every request is logged in `server.log` (a list of `LoggedRequest`), with its headers, so tests can check that
the API key travelled as a header, and which prompts were asked when.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Action:
    """What the server does with one request.

    kind: "reply" (200 with `text`), "error" (HTTP `status`, optional `retry_after` seconds header, `text` as
    the error message when given),
    "malformed" (200 whose body is `body`, not valid JSON), "sleep" (wait `seconds`, then reply with `text`).
    """

    kind: str = "reply"
    text: str = ""
    status: int = 200
    retry_after: float | None = None
    seconds: float = 0.0
    body: str = "{not json"
    input_tokens: int = 11
    output_tokens: int = 7


def reply(text: str, **kwargs: Any) -> Action:
    return Action(kind="reply", text=text, **kwargs)


def error(status: int, retry_after: float | None = None, message: str = "") -> Action:
    return Action(kind="error", status=status, retry_after=retry_after, text=message)


def sleep_then_reply(seconds: float, text: str = "late") -> Action:
    return Action(kind="sleep", seconds=seconds, text=text)


def malformed(body: str = "{not json") -> Action:
    return Action(kind="malformed", body=body)


@dataclass
class LoggedRequest:
    api: str  # "gemini" or "openai"
    path: str
    headers: dict[str, str]
    body: dict
    prompt_text: str  # every text part of the request, joined with newlines
    n_images: int
    model: str
    started: float  # time.monotonic() when the request arrived
    outcome: str = ""  # "reply", "error 429", "sleep", "malformed", "unreadable request" (a truncated body)
    reply_text: str = ""


def _gemini_prompt(body: dict) -> tuple[str, int]:
    texts, images = [], 0
    system = body.get("systemInstruction") or body.get("system_instruction")
    for content in ([system] if system else []) + list(body.get("contents", [])):
        for part in content.get("parts", []):
            if "text" in part:
                texts.append(part["text"])
            if "inlineData" in part or "inline_data" in part:
                images += 1
    return "\n".join(texts), images


def _openai_prompt(body: dict) -> tuple[str, int]:
    texts, images = [], 0
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content or []:
            if part.get("type") == "text":
                texts.append(part["text"])
            elif part.get("type") == "image_url":
                images += 1
    return "\n".join(texts), images


class FakeLLMServer:
    """Start with `with FakeLLMServer() as server:`; `server.url` is "http://127.0.0.1:PORT"."""

    def __init__(self, responder: Callable[[LoggedRequest], Action | str] | None = None):
        self.responder = responder or (lambda request: reply("ok"))
        self.script: list[Action] = []
        self.log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> FakeLLMServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                server._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- request handling --------------------------------------------------------------------------------------
    def _next_action(self, request: LoggedRequest) -> Action:
        with self._lock:
            if self.script:
                return self.script.pop(0)
        action = self.responder(request)
        return reply(action) if isinstance(action, str) else action

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b"{}"
        path = handler.path.split("?")[0]
        headers = {k.lower(): v for k, v in handler.headers.items()}
        try:
            body = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):  # e.g. a client killed halfway through sending
            with self._lock:
                self.log.append(LoggedRequest(api="?", path=path, headers=headers, body={}, prompt_text="",
                                              n_images=0, model="", started=time.monotonic(),
                                              outcome="unreadable request"))
            self._send(handler, 400, json.dumps({"error": {"code": 400, "message": "request body is not JSON"}}))
            return
        gemini = re.search(r"/models/([^/:]+):generateContent$", path)
        if gemini:
            api, model = "gemini", gemini.group(1)
            prompt, n_images = _gemini_prompt(body)
        elif path.endswith("/chat/completions"):
            api, model = "openai", body.get("model", "")
            prompt, n_images = _openai_prompt(body)
        else:
            self._send(handler, 404, json.dumps({"error": {"code": 404, "message": f"no route {path}"}}))
            return
        request = LoggedRequest(api=api, path=path, headers=headers,
                                body=body, prompt_text=prompt, n_images=n_images, model=model,
                                started=time.monotonic())
        with self._lock:
            self.log.append(request)
        action = self._next_action(request)
        request.outcome = action.kind if action.kind != "error" else f"error {action.status}"
        if action.kind == "error":
            headers = {"Retry-After": str(action.retry_after)} if action.retry_after is not None else {}
            status_name = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}.get(action.status, "ERROR")
            payload = {"error": {"code": action.status, "message": action.text or f"injected {action.status}",
                                 "status": status_name, "type": status_name.lower()}}
            self._send(handler, action.status, json.dumps(payload), headers)
            return
        if action.kind == "malformed":
            self._send(handler, 200, action.body)
            return
        if action.kind == "sleep":
            time.sleep(action.seconds)
        request.reply_text = action.text
        if api == "gemini":
            payload = {
                "candidates": [{"content": {"role": "model", "parts": [{"text": action.text}]},
                                "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": action.input_tokens,
                                  "candidatesTokenCount": action.output_tokens,
                                  "totalTokenCount": action.input_tokens + action.output_tokens},
                "modelVersion": model,
            }
        else:
            payload = {
                "id": f"chatcmpl-fake-{len(self.log)}", "object": "chat.completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": action.text},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": action.input_tokens, "completion_tokens": action.output_tokens,
                          "total_tokens": action.input_tokens + action.output_tokens},
            }
        self._send(handler, 200, json.dumps(payload))

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test): nothing to answer

