"""Short-answer VQA scoring on ShapesWorld: is the model's answer the scene graph's answer?

Used to check the first condition of the toy ("the model must see"): held-out accuracy beside chance.
Answers are compared after a light normalisation (case, punctuation, articles, number words), the way VQA
accuracy normalises; multiple-choice answers by their option letter, yes/no answers by their first word.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from mmalign_utils.world import vocab

_NUMBER_WORDS = {"zero": "0", "none": "0", "no": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                 "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}
_ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    text = text.strip().lower()
    text = text.split("\n")[0]
    text = re.sub(r"[^\w\s]", " ", text)
    words = [w for w in text.split() if w not in _ARTICLES]
    return " ".join(words)


def _first_word(text: str) -> str:
    norm = normalize_answer(text)
    return norm.split()[0] if norm else ""


def mc_letter(text: str) -> str:
    """The option letter a reply picks: 'B', 'B.', '(B)', 'B) circle' -> 'B'; '' if none."""
    m = re.match(r"\s*\(?([A-Da-d])(?:[).:,\s]|$)", text)
    return m.group(1).upper() if m else ""


def is_correct(prediction: str, family: str, short_answer: str, answer_letter: str | None = None,
               accepted: Sequence[str] = ()) -> bool:
    """`accepted` lists other answers the world counts as right (e.g. "big" for "large")."""
    if family == "multiple_choice" and answer_letter:
        return mc_letter(prediction) == answer_letter.upper()
    if any(normalize_answer(prediction) == normalize_answer(a) for a in accepted):
        return True
    gold = normalize_answer(short_answer)
    if gold in ("yes", "no"):
        return _first_word(prediction) == gold
    pred = normalize_answer(prediction)
    if gold.isdigit():
        first = pred.split()[0] if pred else ""
        return _NUMBER_WORDS.get(first, first) == gold
    return pred == gold


def answer_space_size(family: str, short_answer: str, options: Sequence[str] | None = None) -> int:
    """Size of the set the answer is drawn from, for a chance level (1 / size)."""
    if family == "multiple_choice" and options:
        return len(options)
    gold = normalize_answer(short_answer)
    if gold in ("yes", "no"):
        return 2
    if gold in vocab.COLORS:
        return len(vocab.COLORS)
    if gold in vocab.SHAPES:
        return len(vocab.SHAPES)
    if gold in vocab.SIZES:
        return len(vocab.SIZES)
    if gold.isdigit():
        return vocab.GRID * vocab.GRID + 1  # 0..9 objects
    positions = {normalize_answer(vocab.position_phrase(r, c)) for r in range(vocab.GRID) for c in range(vocab.GRID)}
    if gold in positions:
        return len(positions)
    return 0  # open answer: no meaningful chance level


def score_predictions(items: Sequence, predictions: Sequence[str]) -> pd.DataFrame:
    """One row per item: family, kind, question, gold, prediction, correct, chance."""
    rows = []
    for item, pred in zip(items, predictions, strict=True):
        size = answer_space_size(item.family, item.short_answer, item.options)
        rows.append({
            "id": item.id, "family": item.family, "kind": item.kind, "question": item.question,
            "gold": item.answer_letter if item.family == "multiple_choice" else item.short_answer,
            "prediction": pred,
            "correct": is_correct(pred, item.family, item.short_answer, item.answer_letter,
                                  (item.extra or {}).get("accepted", ())),
            "chance": 1.0 / size if size else float("nan"),
        })
    return pd.DataFrame(rows)
