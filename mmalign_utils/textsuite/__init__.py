"""Offline text instruction-following suite (IFEval-style, our own prompts): measures how visual instruction
tuning degrades a language model's text-only instruction following. See docs/textsuite.md."""
from .checkers import INSTRUCTION_TYPES, RELATIONS, validate_kwargs
from .diagnostics import (
    empty_answer_rate,
    length_stats,
    per_prompt_table,
    repetition_stats,
    topic_coverage,
)
from .suite import (
    Instruction,
    PromptScore,
    SuiteScore,
    TextPrompt,
    load_text_suite,
    loose_variants,
    score_response,
    score_suite,
    suite_protocol,
    suite_sha256,
)
from .textunits import count_sentences, count_words, split_sentences, stem, words

__all__ = [
    "INSTRUCTION_TYPES", "RELATIONS", "validate_kwargs",
    "empty_answer_rate", "length_stats", "per_prompt_table", "repetition_stats", "topic_coverage",
    "Instruction", "PromptScore", "SuiteScore", "TextPrompt", "load_text_suite", "loose_variants",
    "score_response", "score_suite", "suite_protocol", "suite_sha256",
    "count_sentences", "count_words", "split_sentences", "stem", "words",
]
