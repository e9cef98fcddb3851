"""Retries with exponential backoff and jitter for transient judge failures (429, 5xx, timeouts).

The SDKs' own retries are switched off in our backends so that there is one retry policy, visible and testable:
`call_with_retries` for any callable, `RetryingJudge` to give a whole judge that behaviour (benchmark scorers).
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from mmalign_utils.judges.base import Judge, JudgeReply, JudgeRequest, TransientJudgeError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Retry number n (0-based) waits min(max_delay, base_delay * 2**n), scaled by a random factor in
    [1 - jitter, 1 + jitter] so that parallel workers do not retry in lockstep; a server's Retry-After hint
    is a lower bound on the wait. `max_retries` retries after the first try, then the error is raised.
    """

    max_retries: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    jitter: float = 0.5

    def delay(self, retry_number: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        backoff = min(self.max_delay, self.base_delay * (2 ** retry_number))
        factor = 1.0 + (rng or random).uniform(-self.jitter, self.jitter)
        wait = min(self.max_delay, backoff * factor)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return max(0.0, wait)


def call_with_retries(fn: Callable[[], T], policy: RetryPolicy,
                      on_retry: Callable[[int, TransientJudgeError, float], None] | None = None,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """Call `fn()`; on TransientJudgeError wait per `policy` and call again. Other exceptions pass through.

    `on_retry(retry_number, error, wait_seconds)` is told about each retry (for logs and counters).
    """
    retry_number = 0
    while True:
        try:
            return fn()
        except TransientJudgeError as error:
            if retry_number >= policy.max_retries:
                raise
            wait = policy.delay(retry_number, error.retry_after)
            if on_retry is not None:
                on_retry(retry_number, error, wait)
            sleep(wait)
            retry_number += 1


class RetryingJudge(Judge):
    """Wraps a judge so that `complete` retries transient failures. The inner judge keeps its cache."""

    def __init__(self, inner: Judge, policy: RetryPolicy | None = None):
        super().__init__(cache=None)
        self.inner = inner
        self.policy = policy or RetryPolicy()
        self.judge_id = inner.judge_id
        self.retries = 0

    def _call(self, request: JudgeRequest) -> JudgeReply:  # not used: complete() delegates to the inner judge
        return self.inner.complete(request)

    def complete(self, request: JudgeRequest) -> JudgeReply:
        def count(*_: object) -> None:
            self.retries += 1

        reply = call_with_retries(lambda: self.inner.complete(request), self.policy, on_retry=count)
        self.calls += 1
        return reply

    def __repr__(self) -> str:
        return f"RetryingJudge({self.inner!r}, {self.policy!r})"


RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def error_for_status(status: int | None, message: str, retry_after: float | None = None,
                     key_env: str | None = None) -> Exception:
    """The JudgeError for an HTTP failure: transient (retry), config (stop the run) or plain (this request only).

    `message` should already be free of secrets; `key_env` names the env var to check on 401/403.
    """
    from mmalign_utils.judges.base import JudgeConfigError, JudgeError

    if status is None or status in RETRYABLE_STATUS:
        return TransientJudgeError(message, status=status, retry_after=retry_after)
    if status in (401, 403):
        hint = f"; check the key in ${key_env}" if key_env else ""
        return JudgeConfigError(f"authentication refused (HTTP {status}){hint}: {message}")
    if status == 404:
        return JudgeConfigError(f"not found (HTTP 404; is the model name right?): {message}")
    return JudgeError(f"HTTP {status}: {message}")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number; HTTP dates are rare from these APIs and are ignored)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _transport_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [TimeoutError, ConnectionError]
    for module_name in ("httpx", "httpx2"):  # google-genai may ship its own httpx fork, httpx2
        try:
            module = __import__(module_name)
            errors.append(module.TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


TRANSPORT_ERRORS = _transport_errors()  # timeouts, refused or dropped connections: always transient
