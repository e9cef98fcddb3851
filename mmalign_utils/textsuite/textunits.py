"""Words, sentences and stems without NLTK data (punkt is not available offline).

The rules are deliberately small and written down here, because every length constraint of the suite is only as
good as the counter behind it.

Words (`words`, `count_words`)
  A word is a run of letters/digits. Inside a word these joiners are allowed between two letters/digits: an
  apostrophe (don't, it's), a hyphen (well-known, 2024-05-01), and, between two digits only, one of . , : /
  (3.14, 1,000, 10:30, 1/2). Dotted abbreviations of single letters count as one word (e.g., U.S., a.m.).
  Punctuation, markdown symbols, bullets and emoji are not words. URLs fall apart into their parts.
  (IFEval counts ``\\w+`` runs, so "don't" is two words there and one word here.)

Sentences (`split_sentences`, `count_sentences`)
  1. The text is cut into blocks at line breaks that end a unit: a blank line, a line that is a list item
     (``-``, ``*``, ``+``, ``•``, ``1.``, ``1)``) or a markdown heading (``#``), or the line before one of those.
     Other single line breaks (wrapped text, poem lines without punctuation) act as spaces.
  2. A list marker or heading marker at the start of a block is dropped.
  3. Inside a block a sentence ends at a run of ``.``, ``!``, ``?`` or ``…`` (plus any closing quotes or
     brackets) followed by whitespace or the end of the block, except after
       - a title or fixed abbreviation that never ends a sentence: Mr. Mrs. Ms. Dr. Prof. Sr. Jr. St. vs. e.g.
         i.e. cf. approx. fig. no. vol. (case-insensitive);
       - a single capital letter (an initial: "J. K. Rowling");
       - "etc." or a dotted abbreviation such as "U.S.", unless the next word starts with a capital letter.
     Decimal points never split because no whitespace follows them ("3.5 cups").
  4. A piece with no letter or digit (a stray "***", an emoji) is not a sentence; a final piece without end
     punctuation is a sentence.

Stems (`stem`)
  A light suffix stripper used only to match topic keywords, in three steps: (1) plural/third-person -s
  (-sses -> -ss, -ies -> -y, -s unless the word ends in -ss, -us or -is); (2) -ied -> -y, or -ing / -ed when a
  vowel stays in the rest and the word does not end in -eed; (3) a final -e is dropped and a doubled final
  consonant undoubled. A stem is never shorter than three letters. It is consistent rather than linguistically
  exact: "watering", "watered", "waters" and "water" share a stem, as do "make", "makes" and "making",
  "studies", "studied" and "study", "boxes" and "box".
"""
from __future__ import annotations

import re

# A word: letters/digits with inner apostrophes or hyphens, and . , : / only between digits;
# or a dotted abbreviation of two or more single letters ("e.g.", "U.S.").
_WORD_RE = re.compile(
    r"(?:[^\W\d_]\.){2,}"
    r"|[^\W_]+(?:(?:['\u2019\-]|(?<=\d)[.,:/](?=\d))[^\W_]+)*"
)

_LIST_MARKER_RE = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,3}[.)])\s+")
_HEADING_RE = re.compile(r"^\s*#{1,6}\s+")

# Abbreviations after which a period never ends a sentence (compared lowercased, without the final period).
NEVER_FINAL_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "e.g", "i.e", "cf", "approx", "fig", "no", "vol"}
)
# Abbreviations that end a sentence only when the next word is capitalised.
SOMETIMES_FINAL_ABBREVIATIONS = frozenset({"etc"})

_TERMINATOR_RE = re.compile(r"(?:[.!?\u2026]+)[\"'\u201d\u2019)\]]*(?=\s|$)")
_HAS_ALNUM_RE = re.compile(r"[^\W_]")


def words(text: str) -> list[str]:
    """The words of `text` in order, as written (see the module docstring for the rule)."""
    return _WORD_RE.findall(text)


def count_words(text: str) -> int:
    return len(words(text))


def _is_unit_line(line: str) -> bool:
    return bool(_LIST_MARKER_RE.match(line) or _HEADING_RE.match(line))


def _blocks(text: str) -> list[str]:
    """Cut text into blocks at line breaks that end a unit (blank line, list item, heading)."""
    blocks: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(" ".join(current))
                current = []
            continue
        if _is_unit_line(line):
            if current:
                blocks.append(" ".join(current))
            current = [line]
            # a list item or heading is a unit of its own: close it at once
            blocks.append(" ".join(current))
            current = []
            continue
        current.append(line.strip())
    if current:
        blocks.append(" ".join(current))
    return blocks


def _strip_block_marker(block: str) -> str:
    block = _HEADING_RE.sub("", block, count=1)
    return _LIST_MARKER_RE.sub("", block, count=1)


def _token_before(text: str, end: int) -> str:
    """The whitespace-delimited token that ends at `end` (exclusive), without leading brackets/quotes."""
    start = end
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return text[start:end].lstrip("([\"'\u201c\u2018")


def _next_word_starts_upper(text: str, pos: int) -> bool:
    rest = text[pos:].lstrip().lstrip("([\"'\u201c\u2018*_")
    return bool(rest) and rest[0].isupper()


def _ends_sentence(block: str, match: re.Match) -> bool:
    punct = match.group(0)
    if not punct.startswith(".") or len(punct.rstrip("\"'\u201d\u2019)]")) > 1:
        return True  # ! ? … or "..." always end a sentence
    token = _token_before(block, match.start()).lower()
    if token in NEVER_FINAL_ABBREVIATIONS:
        return False
    if len(token) == 1 and token.isalpha() and block[match.start() - 1].isupper():
        return False  # an initial: "J. K. Rowling"
    if token in SOMETIMES_FINAL_ABBREVIATIONS or re.fullmatch(r"(?:[^\W\d_]\.)+[^\W\d_]", token):
        return _next_word_starts_upper(block, match.end())
    return True


def split_sentences(text: str) -> list[str]:
    """The sentences of `text` (see the module docstring for the rules), stripped."""
    sentences: list[str] = []
    for block in _blocks(text):
        body = _strip_block_marker(block).strip()
        start = 0
        for match in _TERMINATOR_RE.finditer(body):
            if _ends_sentence(body, match):
                sentences.append(body[start:match.end()].strip())
                start = match.end()
        sentences.append(body[start:].strip())
    return [s for s in sentences if _HAS_ALNUM_RE.search(s)]


def count_sentences(text: str) -> int:
    return len(split_sentences(text))


_MIN_STEM = 3


def stem(word: str) -> str:
    """A light, consistent stem of one word (lowercased); see the module docstring."""
    w = word.lower().replace("\u2019", "'")
    if w.endswith("'s"):
        w = w[:-2]
    # step 1: plurals and third person -s
    if w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("ies") and len(w) - 2 >= _MIN_STEM:
        w = w[:-3] + "y"
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")) and len(w) - 1 >= _MIN_STEM:
        w = w[:-1]
    # step 2: -ing / -ed, only when a vowel stays in the stem ("spring" and "need" keep their ending)
    if w.endswith("ied") and len(w) - 2 >= _MIN_STEM:
        w = w[:-3] + "y"
    else:
        for suffix in ("ing", "ed"):
            rest = w[: -len(suffix)]
            if w.endswith(suffix) and len(rest) >= _MIN_STEM and re.search("[aeiouy]", rest) and not w.endswith("eed"):
                w = rest
                break
    # step 3: a final -e goes and a doubled final consonant is undoubled, so make/making and stop/stopped meet
    if w.endswith("e") and len(w) > _MIN_STEM:
        w = w[:-1]
    if len(w) > _MIN_STEM and w[-1] == w[-2] and w[-1] not in "aeiou":
        w = w[:-1]
    return w
