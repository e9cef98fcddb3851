"""Token and cost accounting for judge calls.

Prices are USD per million tokens, (input, output). The defaults are list prices published by Google and OpenAI
in 2025 for their standard paid tiers; prices change, so pass `prices=` to `annotate` for real budgeting. Gemini
bills thinking tokens as output; GeminiJudge already counts them in `output_tokens`. Cached replies cost nothing.
"""
from __future__ import annotations

from collections.abc import Mapping

DEFAULT_PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gemini-2.5-pro": (1.25, 10.00),  # prompts up to 200k tokens
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.0-flash": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),  # gpt-4-0613, the MT-Bench / MM-Vet judge
    "gpt-3.5-turbo": (0.50, 1.50),
}


def model_of(judge_id: str) -> str:
    """'gemini:gemini-2.5-flash' -> 'gemini-2.5-flash'; 'openai:m@http://host/v1' -> 'm'."""
    rest = judge_id.split(":", 1)[1] if ":" in judge_id else judge_id
    model, sep, url = rest.rpartition("@")
    return model if sep and url.startswith(("http://", "https://")) else rest


def price_for(model: str, prices: Mapping[str, tuple[float, float]]) -> tuple[float, float] | None:
    """The exact entry, else the longest entry that prefixes the model name (dated versions such as
    'gpt-4o-2024-08-06' take 'gpt-4o'); None when unknown."""
    if model in prices:
        return prices[model]
    matches = [name for name in prices if model.startswith(name + "-")]
    return prices[max(matches, key=len)] if matches else None


def cost_usd(model: str, input_tokens: int, output_tokens: int,
             prices: Mapping[str, tuple[float, float]]) -> float | None:
    price = price_for(model, prices)
    if price is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000
