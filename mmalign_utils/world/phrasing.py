"""Small English helpers shared by scene descriptions and question templates."""
from __future__ import annotations

from collections.abc import Sequence

from mmalign_utils.world.vocab import plural

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                 "twelve")
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")


def number_word(n: int) -> str:
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def ordinal(index: int) -> str:
    """0 -> "first", 1 -> "second", ..."""
    return _ORDINALS[index]


def with_article(phrase: str) -> str:
    """"orange circle" -> "an orange circle"; "large circle" -> "a large circle"."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def join_words(items: Sequence[str], conjunction: str = "and") -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    items = list(items)
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + f" {conjunction} " + items[-1]


def count_phrase(n: int, noun: str) -> str:
    """(0, "circle") -> "no circles"; (1, ...) -> "one circle"; (2, ...) -> "two circles"."""
    if n == 0:
        return f"no {plural(noun)}"
    return f"{number_word(n)} {noun if n == 1 else plural(noun)}"


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]
