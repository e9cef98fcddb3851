"""One checker per verifiable instruction type, in the style of IFEval (Zhou et al. 2023).

Every checker is a plain function `check(response, **kwargs) -> bool` registered under a type id such as
"length:words". Its keyword-only parameters, with their annotations, are the instruction's kwargs schema:
`validate_kwargs` checks a prompt's kwargs against it, so a typo in the prompt file fails at load time rather
than scoring every response as a miss.

Where IFEval defines a rule, the checker follows it (noted as "IFEval rule"); our additions and deviations are
noted too. Counting of words and sentences uses `textunits` (no NLTK data offline), so counts can differ from
IFEval's by a word or a sentence on unusual text.
"""
from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass

from .textunits import count_sentences, count_words, words

RELATIONS = ("less than", "at most", "at least", "exactly")


def compare(value: int, relation: str, threshold: int) -> bool:
    """`value` <relation> `threshold` for one of RELATIONS."""
    if relation == "less than":
        return value < threshold
    if relation == "at most":
        return value <= threshold
    if relation == "at least":
        return value >= threshold
    if relation == "exactly":
        return value == threshold
    raise ValueError(f"unknown relation {relation!r}; use one of {RELATIONS}")


@dataclass(frozen=True)
class InstructionType:
    """A registered instruction type: its id, checker, and the kwargs the checker takes."""

    type_id: str
    check: Callable[..., bool]
    params: dict[str, object]  # kwarg name -> annotation (int, str, list[str])
    description: str


INSTRUCTION_TYPES: dict[str, InstructionType] = {}


def register(type_id: str) -> Callable[[Callable[..., bool]], Callable[..., bool]]:
    def decorate(fn: Callable[..., bool]) -> Callable[..., bool]:
        hints = typing.get_type_hints(fn)
        params = {
            name: hints[name]
            for name, p in inspect.signature(fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        description = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        INSTRUCTION_TYPES[type_id] = InstructionType(type_id, fn, params, description)
        return fn

    return decorate


def _kwarg_problem(name: str, annotation: object, value: object) -> str | None:
    if annotation is int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"{name} must be a non-negative integer, got {value!r}"
    elif annotation is str:
        if not isinstance(value, str) or not value.strip():
            return f"{name} must be a non-empty string, got {value!r}"
        if name == "relation" and value not in RELATIONS:
            return f"relation must be one of {RELATIONS}, got {value!r}"
    elif annotation == list[str]:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            return f"{name} must be a non-empty list of non-empty strings, got {value!r}"
    return None


def validate_kwargs(type_id: str, kwargs: dict) -> None:
    """Raise ValueError (naming the type and every problem) unless `kwargs` fit the checker of `type_id`."""
    if type_id not in INSTRUCTION_TYPES:
        raise ValueError(f"unknown instruction type {type_id!r}; known types: {sorted(INSTRUCTION_TYPES)}")
    spec = INSTRUCTION_TYPES[type_id]
    problems = [f"missing kwarg {k!r}" for k in spec.params if k not in kwargs]
    problems += [f"unexpected kwarg {k!r} (takes {sorted(spec.params)})" for k in kwargs if k not in spec.params]
    for name, annotation in spec.params.items():
        if name in kwargs and (problem := _kwarg_problem(name, annotation, kwargs[name])):
            problems.append(problem)
    if not problems:
        extra = _EXTRA_VALIDATION.get(type_id)
        if extra and (problem := extra(kwargs)):
            problems.append(problem)
    if problems:
        raise ValueError(f"instruction {type_id!r}: " + "; ".join(problems))


def check_instruction(type_id: str, response: str, kwargs: dict) -> bool:
    """Run the checker of `type_id` on one response variant (no strict/loose logic here)."""
    return bool(INSTRUCTION_TYPES[type_id].check(response, **kwargs))


# ---------------------------------------------------------------------------------------------- length


@register("length:words")
def check_word_count(response: str, *, relation: str, num_words: int) -> bool:
    """The response has <relation> <num_words> words (our word rule, see textunits)."""
    return compare(count_words(response), relation, num_words)


@register("length:words_range")
def check_word_range(response: str, *, min_words: int, max_words: int) -> bool:
    """The response has between min_words and max_words words, both inclusive (ours)."""
    return min_words <= count_words(response) <= max_words


@register("length:sentences")
def check_sentence_count(response: str, *, relation: str, num_sentences: int) -> bool:
    """The response has <relation> <num_sentences> sentences (our splitter, see textunits)."""
    return compare(count_sentences(response), relation, num_sentences)


@register("length:paragraphs")
def check_divider_paragraphs(response: str, *, num_paragraphs: int) -> bool:
    """Exactly N paragraphs separated by the markdown divider *** (IFEval rule).

    An empty piece before the first or after the last divider is ignored; an empty piece in between fails.
    """
    pieces = re.split(r"\s?\*\*\*\s?", response)
    count = len(pieces)
    for index, piece in enumerate(pieces):
        if not piece.strip():
            if index in (0, len(pieces) - 1):
                count -= 1
            else:
                return False
    return count == num_paragraphs


def blank_line_paragraphs(response: str) -> list[str]:
    """Non-empty paragraphs separated by one or more blank lines."""
    return [p for p in re.split(r"\n\s*\n", response) if p.strip()]


@register("length:blank_line_paragraphs")
def check_blank_line_paragraphs(response: str, *, relation: str, num_paragraphs: int) -> bool:
    """<relation> N paragraphs separated by blank lines (ours; IFEval only uses *** dividers for counts)."""
    return compare(len(blank_line_paragraphs(response)), relation, num_paragraphs)


@register("length:nth_paragraph_first_word")
def check_nth_paragraph_first_word(
    response: str, *, num_paragraphs: int, nth_paragraph: int, first_word: str
) -> bool:
    """Exactly N blank-line paragraphs and paragraph n (1-based) starts with first_word (IFEval-like).

    The first word (our word rule) is compared case-insensitively, so leading quotes or markdown symbols and
    punctuation after it do not matter. IFEval splits on exactly "\\n\\n"; we accept blank lines holding spaces.
    """
    paragraphs = blank_line_paragraphs(response)
    if len(paragraphs) != num_paragraphs or not 1 <= nth_paragraph <= len(paragraphs):
        return False
    found = words(paragraphs[nth_paragraph - 1])
    return bool(found) and found[0].lower() == first_word.strip().lower()


# -------------------------------------------------------------------------------------------- keywords


@register("keywords:include")
def check_keywords_included(response: str, *, keywords: list[str]) -> bool:
    """Every keyword occurs, case-insensitively, as a substring (IFEval rule: "water" also matches "watering")."""
    lowered = response.lower()
    return all(k.lower() in lowered for k in keywords)


@register("keywords:forbidden")
def check_forbidden_words(response: str, *, forbidden_words: list[str]) -> bool:
    """No forbidden word occurs as a whole word, case-insensitively (IFEval rule)."""
    return not any(re.search(r"\b" + re.escape(w) + r"\b", response, flags=re.IGNORECASE) for w in forbidden_words)


@register("keywords:frequency")
def check_keyword_frequency(response: str, *, keyword: str, relation: str, frequency: int) -> bool:
    """The keyword occurs <relation> <frequency> times, counted case-insensitively as a substring (IFEval rule)."""
    occurrences = len(re.findall(re.escape(keyword), response, flags=re.IGNORECASE))
    return compare(occurrences, relation, frequency)


@register("keywords:letter_frequency")
def check_letter_frequency(response: str, *, letter: str, relation: str, let_frequency: int) -> bool:
    """The letter occurs <relation> <let_frequency> times, case-insensitively (IFEval rule)."""
    return compare(response.lower().count(letter.lower()), relation, let_frequency)


# ---------------------------------------------------------------------------------------------- format

_STAR_BULLET_RE = re.compile(r"^\s*\*[^\*].*$", flags=re.MULTILINE)
_DASH_BULLET_RE = re.compile(r"^\s*-.*$", flags=re.MULTILINE)


def count_bullets(response: str) -> int:
    """Markdown bullets: lines starting with "* " or "-" (IFEval rule; "•" and "1." do not count)."""
    return len(_STAR_BULLET_RE.findall(response)) + len(_DASH_BULLET_RE.findall(response))


@register("format:bullets")
def check_bullets(response: str, *, relation: str, num_bullets: int) -> bool:
    """<relation> N markdown bullet points (IFEval counts exactly; we also allow other relations)."""
    return compare(count_bullets(response), relation, num_bullets)


_NUMBERED_ITEM_RE = re.compile(r"^\s*\d{1,3}[.)]\s+\S", flags=re.MULTILINE)


@register("format:numbered_items")
def check_numbered_items(response: str, *, relation: str, num_items: int) -> bool:
    """<relation> N numbered list items: lines starting "1. " or "1) " (ours)."""
    return compare(len(_NUMBERED_ITEM_RE.findall(response)), relation, num_items)


def _strip_code_fence(text: str) -> str:
    text = text.strip()
    for prefix in ("```json", "```Json", "```JSON", "```"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    if text.endswith("```"):
        text = text[:-3]
    return text.strip()


@register("format:json")
def check_json(response: str) -> bool:
    """The whole response parses as JSON, optionally inside one ``` code fence (IFEval rule)."""
    try:
        json.loads(_strip_code_fence(response))
    except ValueError:
        return False
    return True


@register("format:title")
def check_title(response: str) -> bool:
    """A non-empty title in double angular brackets on one line, e.g. <<Rain>> (IFEval rule)."""
    return any(t.strip("<> ") for t in re.findall(r"<<[^\n]+>>", response))


@register("format:highlighted_sections")
def check_highlighted_sections(response: str, *, num_highlights: int) -> bool:
    """At least N non-empty markdown highlights *like this* or **like this** (IFEval rule).

    As in IFEval, a **double** highlight is counted by both patterns.
    """
    count = sum(1 for h in re.findall(r"\*[^\n\*]*\*", response) if h.strip("*").strip())
    count += sum(1 for h in re.findall(r"\*\*[^\n\*]*\*\*", response) if h[2:-2].strip())
    return count >= num_highlights


@register("format:sections")
def check_sections(response: str, *, section_splitter: str, num_sections: int) -> bool:
    """At least N sections, each introduced by "<splitter> <number>", e.g. "Section 1" (IFEval rule, case-sensitive)."""
    pieces = re.split(r"\s?" + re.escape(section_splitter) + r"\s?\d+\s?", response)
    return len(pieces) - 1 >= num_sections


@register("format:constrained_response")
def check_constrained_response(response: str, *, options: list[str]) -> bool:
    """The response contains one of the given exact options, e.g. "My answer is yes." (IFEval rule)."""
    stripped = response.strip()
    return any(option in stripped for option in options)


@register("format:quotation")
def check_quotation(response: str) -> bool:
    """The whole response is wrapped in double quotation marks (IFEval rule; straight quotes only)."""
    stripped = response.strip()
    return len(stripped) > 1 and stripped[0] == '"' and stripped[-1] == '"'


@register("format:two_responses")
def check_two_responses(response: str) -> bool:
    """Exactly two different non-empty answers separated by ****** (IFEval rule)."""
    pieces = response.split("******")
    answers = []
    for index, piece in enumerate(pieces):
        if not piece.strip():
            if index not in (0, len(pieces) - 1):
                return False
        else:
            answers.append(piece.strip())
    return len(answers) == 2 and answers[0] != answers[1]


@register("format:repeat_prompt")
def check_repeat_prompt(response: str, *, prompt_to_repeat: str) -> bool:
    """The response starts with the given request, word for word, case-insensitively (IFEval rule)."""
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


# ------------------------------------------------------------------------------------------------ case


@register("case:lowercase")
def check_lowercase(response: str) -> bool:
    """No capital letter and at least one letter (IFEval rule, without its language detection)."""
    return response.islower()


@register("case:uppercase")
def check_uppercase(response: str) -> bool:
    """No lowercase letter and at least one letter (IFEval rule, without its language detection)."""
    return response.isupper()


@register("case:capital_word_frequency")
def check_capital_word_frequency(response: str, *, relation: str, capital_frequency: int) -> bool:
    """<relation> N words written in capitals (IFEval rule; as there, the word "I" counts)."""
    return compare(sum(1 for w in words(response) if w.isupper()), relation, capital_frequency)


# --------------------------------------------------------------------------------- punctuation, start/end


@register("punctuation:no_comma")
def check_no_comma(response: str) -> bool:
    """No comma anywhere (IFEval rule; the fullwidth comma is not checked)."""
    return "," not in response


@register("startend:end_phrase")
def check_end_phrase(response: str, *, end_phrase: str) -> bool:
    """The response ends with the exact phrase, case-insensitively, nothing after it (IFEval rule)."""
    return response.strip().lower().endswith(end_phrase.strip().lower())


@register("startend:start_phrase")
def check_start_phrase(response: str, *, start_phrase: str) -> bool:
    """The response starts with the exact phrase, case-insensitively (ours, the mirror of end_phrase)."""
    return response.strip().lower().startswith(start_phrase.strip().lower())


# ------------------------------------------------------------------------------------------- content


@register("content:placeholders")
def check_placeholders(response: str, *, num_placeholders: int) -> bool:
    """At least N placeholders in square brackets such as [name] (IFEval rule)."""
    return len(re.findall(r"\[.*?\]", response)) >= num_placeholders


@register("content:postscript")
def check_postscript(response: str, *, postscript_marker: str) -> bool:
    """The postscript marker occurs (IFEval rule, any case): "P.S." also accepts "p.s." and "P. S."."""
    lowered = response.lower()
    marker = postscript_marker.strip()
    if marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(marker.lower()) + r".*$"
    return bool(re.findall(pattern, lowered, flags=re.MULTILINE))


# ---------------------------------------------------------------------- cross-field kwarg checks


def _word_range_problem(kwargs: dict) -> str | None:
    if kwargs["min_words"] > kwargs["max_words"]:
        return f"min_words {kwargs['min_words']} exceeds max_words {kwargs['max_words']}"
    return None


def _nth_paragraph_problem(kwargs: dict) -> str | None:
    if not 1 <= kwargs["nth_paragraph"] <= kwargs["num_paragraphs"]:
        return f"nth_paragraph {kwargs['nth_paragraph']} outside 1..{kwargs['num_paragraphs']}"
    return None


def _letter_problem(kwargs: dict) -> str | None:
    letter = kwargs["letter"]
    if len(letter) != 1 or not letter.isalpha():
        return f"letter must be a single letter, got {letter!r}"
    return None


_EXTRA_VALIDATION: dict[str, Callable[[dict], str | None]] = {
    "length:words_range": _word_range_problem,
    "length:nth_paragraph_first_word": _nth_paragraph_problem,
    "keywords:letter_frequency": _letter_problem,
}
