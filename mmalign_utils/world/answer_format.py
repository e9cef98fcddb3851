"""Answer-format demands of LLaVA-1.5's own kinds, for a share of notebook 02's preference prompts.

LLaVA-1.5's training prompts often say how to answer ("Answer the question using a single word or phrase.",
"Answer with the option's letter from the given choices directly."), and a Gemini rater's helpfulness counts
whether the answer did as asked. ShapesWorld's LRV-like prompts carried no such demand, so no preference pair
could separate answers by compliance (docs/oracle_and_sampling.md, "Next: what the text suite loses"). A demand
lives in `QAItem.extra["answer_format"]` and is appended to the question as its last line; the oracle reads it
back (`judges/oracle.py`, rule 8) and takes a point of helpfulness from an answer that does not honour it.

Only LLaVA's kinds are used, never the held-out text suite's (mention a keyword, bullets, a postscript), so the
text suite stays a test of transfer rather than of drilled items.
"""
from __future__ import annotations

import random
import re
from dataclasses import replace
from typing import Any

from mmalign_utils.textsuite.textunits import count_sentences, count_words
from mmalign_utils.world.qa import MC_SUFFIX, SHORT_ANSWER_SUFFIX, QAItem

DETAIL_SENTENCES = 3  # "in detail, in at least N sentences"
WORD_MAX_WORDS = 4  # "a single word or phrase": at most this many words, one sentence

INSTRUCTIONS: dict[str, str] = {
    "word": SHORT_ANSWER_SUFFIX,
    "sentence": "Answer in one sentence.",
    "letter": MC_SUFFIX,
    "detail": f"Answer in detail, in at least {DETAIL_SENTENCES} sentences.",
}
KINDS: tuple[str, ...] = tuple(INSTRUCTIONS)

_LETTER_ONLY = re.compile(r"^\W*\(?([A-Da-d])\)?[.)]?\s*$")


def applicable_kinds(item: QAItem) -> tuple[str, ...]:
    """The demands that make sense for the item: the option letter for multiple choice; one sentence or N
    sentences of detail for descriptions and LRV's "describe the X" instructions; a word or phrase, or one
    sentence, for every question with a short answer (yes/no, counts, relations, chart values, reasoning)."""
    subtype = (item.extra or {}).get("subtype", "")
    if item.family == "multiple_choice":
        return ("letter",)
    if item.family == "describe" or subtype in ("describe", "chart_describe", "summary", "lrv"):
        return ("sentence", "detail")
    if item.family == "conversation":
        return ()  # several turns: a demand on the first would not say which turn it binds
    return ("word", "sentence")


def with_demand(item: QAItem, kind: str) -> QAItem:
    """A copy of the item whose question ends with the demand's instruction, recorded in extra["answer_format"]."""
    if kind not in INSTRUCTIONS:
        raise ValueError(f"unknown answer-format demand {kind!r}; choose from {list(KINDS)}")
    if kind not in applicable_kinds(item):
        raise ValueError(f"item {item.id} ({item.family}) cannot take the demand {kind!r}; it takes "
                         f"{list(applicable_kinds(item))}")
    spec: dict[str, Any] = {"kind": kind, "instruction": INSTRUCTIONS[kind]}
    if kind == "detail":
        spec["min_sentences"] = DETAIL_SENTENCES
    return replace(item, question=f"{item.question}\n{INSTRUCTIONS[kind]}",
                   extra={**item.extra, "answer_format": spec})


def draw_demand(item: QAItem, rng: random.Random, share: float) -> QAItem:
    """With probability `share`, the item with one applicable demand drawn uniformly; else the item unchanged.
    Draws from `rng` for every item, so which items get a demand does not depend on the items' kinds."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"demand_share must be in [0, 1], got {share}")
    hit, pick = rng.random(), rng.random()
    kinds = applicable_kinds(item)
    if hit >= share or not kinds:
        return item
    return with_demand(item, kinds[min(int(pick * len(kinds)), len(kinds) - 1)])


def honours(answer: str, answer_format: dict[str, Any]) -> bool:
    """Whether the answer does what the demand asked.

    word: one sentence of 1 to WORD_MAX_WORDS words. sentence: exactly one sentence of at least 3 words. letter:
    the option's letter alone ("B", "B.", "(B)"). detail: at least `min_sentences` sentences.
    Words and sentences are counted as the text suite counts them (`textsuite.textunits`: a list item is a
    sentence, a final piece without a full stop is one too)."""
    kind = answer_format.get("kind")
    n_sentences, n_words = count_sentences(answer), count_words(answer)
    if kind == "word":
        return n_sentences == 1 and 1 <= n_words <= WORD_MAX_WORDS
    if kind == "sentence":
        return n_sentences == 1 and n_words >= 3
    if kind == "letter":
        return _LETTER_ONLY.match(answer) is not None
    if kind == "detail":
        return n_sentences >= int(answer_format.get("min_sentences", DETAIL_SENTENCES))
    raise ValueError(f"unknown answer-format demand {kind!r} in {answer_format}; choose from {list(KINDS)}")


__all__ = ["DETAIL_SENTENCES", "INSTRUCTIONS", "KINDS", "WORD_MAX_WORDS", "applicable_kinds", "draw_demand",
           "honours", "with_demand"]
