"""Diagnostics beside the pass/fail score: length, repetition, topic coverage, empty answers.

A degraded model can fail constraints for different reasons (answers that are empty, cut short, looping, or
off topic); these numbers tell those apart. All word-level measures use `textunits.words`, lowercased.
"""
from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .suite import TextPrompt, align_responses, score_response
from .textunits import count_sentences, count_words, stem, words

MAX_REPEAT_PERIOD = 20  # longest unit (in words) looked for by `longest_repeated_run`


def is_empty_answer(response: str | None) -> bool:
    """No response, or one without a single word."""
    return response is None or count_words(response) == 0


def empty_answer_rate(responses: Sequence[str | None]) -> float:
    return sum(is_empty_answer(r) for r in responses) / len(responses) if responses else math.nan


def count_tokens(text: str, tokenizer: Any) -> int:
    """Tokens without special tokens, for a Hugging Face tokenizer or anything with `encode(text)`."""
    try:
        return len(tokenizer.encode(text, add_special_tokens=False))
    except TypeError:  # an encode() without that keyword (e.g. a plain tokenizer object)
        return len(tokenizer.encode(text))


def length_stats(responses: Sequence[str | None], tokenizer: Any = None) -> dict[str, float]:
    """Mean and median words, characters and (with a tokenizer) tokens per response, plus the empty rate."""
    texts = [r or "" for r in responses]
    if not texts:
        raise ValueError("length_stats needs at least one response")
    columns = {"words": [count_words(t) for t in texts], "chars": [len(t) for t in texts]}
    if tokenizer is not None:
        columns["tokens"] = [count_tokens(t, tokenizer) for t in texts]
    out: dict[str, float] = {"n": len(texts)}
    for name in ("words", "chars", "tokens"):
        values = columns.get(name)
        out[f"mean_{name}"] = statistics.fmean(values) if values else math.nan
        out[f"median_{name}"] = float(statistics.median(values)) if values else math.nan
    out["empty_rate"] = empty_answer_rate(list(responses))
    return out


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(tokens: list[str], n: int) -> float:
    """Distinct n-grams / all n-grams (NaN when the text has fewer than n words)."""
    grams = _ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else math.nan


def repeated_ngram_share(tokens: list[str], n: int = 4) -> float:
    """Share of n-gram occurrences that repeat an earlier one: 1 - distinct/total (0 when no n-gram)."""
    grams = _ngrams(tokens, n)
    if not grams:
        return 0.0
    return 1.0 - len(Counter(grams)) / len(grams)


def longest_repeated_run(tokens: list[str], max_period: int = MAX_REPEAT_PERIOD) -> int:
    """Words covered by the longest back-to-back repetition of a unit of 1..max_period words; 0 if none.

    "a b c a b c a b c d" has the unit "a b c" three times in a row: 9 words. A unit must appear at least
    twice in a row; a partial last copy counts ("a b a b a" -> 5). This catches the loops of degenerate decoding.
    """
    best = 0
    n = len(tokens)
    for period in range(1, min(max_period, n // 2) + 1):
        run = 0  # consecutive positions i with tokens[i] == tokens[i + period]
        for i in range(n - period):
            if tokens[i] == tokens[i + period]:
                run += 1
                if run >= period:
                    best = max(best, run + period)
            else:
                run = 0
    return best


def repetition_stats(text: str) -> dict[str, float]:
    """Repeated 4-gram share, distinct-1, distinct-2 and longest repeated run (in words) of one text."""
    tokens = [w.lower() for w in words(text)]
    return {
        "repeated_4gram_share": repeated_ngram_share(tokens, 4),
        "distinct_1": distinct_n(tokens, 1),
        "distinct_2": distinct_n(tokens, 2),
        "longest_repeated_run": longest_repeated_run(tokens),
    }


def topic_coverage(prompt: TextPrompt, response: str | None) -> float:
    """Share of the prompt's topic_keywords found in the response, comparing stems ("watering" ~ "water")."""
    response_stems = {stem(w) for w in words(response or "")}
    keywords = prompt.topic_keywords
    return sum(stem(k) in response_stems for k in keywords) / len(keywords)


def per_prompt_table(prompts: Sequence[TextPrompt],
                     responses: Sequence[str | None] | Mapping[str, str | None],
                     tokenizer: Any = None):
    """One row per prompt: id, category, difficulty, pass/fail, length, coverage, repetition, emptiness.

    `strict`/`loose` are 0/1 per prompt (all instructions pass); `instr_strict`/`instr_loose` are the shares of
    the prompt's instructions that pass. Averages of these columns give the suite metrics except
    instruction-level accuracy, which pools instructions (use `score_suite`).
    """
    import pandas as pd

    aligned = align_responses(prompts, responses)
    rows = []
    for prompt, response in zip(prompts, aligned):
        text = response or ""
        score = score_response(prompt, response)
        row = {
            "id": prompt.id,
            "category": prompt.category,
            "difficulty": prompt.difficulty,
            "n_instructions": len(prompt.instructions),
            "strict": int(score.strict),
            "loose": int(score.loose),
            "instr_strict": sum(score.strict_per_instruction) / len(prompt.instructions),
            "instr_loose": sum(score.loose_per_instruction) / len(prompt.instructions),
            "n_words": count_words(text),
            "n_chars": len(text),
            "n_sentences": count_sentences(text),
            "coverage": topic_coverage(prompt, text),
            "empty": int(is_empty_answer(response)),
            **repetition_stats(text),
        }
        if tokenizer is not None:
            row["n_tokens"] = count_tokens(text, tokenizer)
        rows.append(row)
    return pd.DataFrame(rows)
