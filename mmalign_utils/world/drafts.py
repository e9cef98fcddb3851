"""What a question generator returns before it becomes a QAItem (qa.make_items adds id, family and scene)."""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Draft:
    question: str
    short_answer: str
    detailed_answer: str
    label: str | None = None  # "yes" / "no" for yes-no questions
    negative_strategy: str | None = None
    options: list[str] | None = None
    answer_letter: str | None = None
    turns: list[tuple[str, str]] | None = None
    # What the answer was computed from (subtype, target object, filters...) plus accepted short answers;
    # tests re-derive every answer from these against the scene graph.
    extra: dict = field(default_factory=dict)


class Infeasible(Exception):
    """This question subtype cannot be asked about this scene (e.g. no two objects of different sizes)."""


Generator = Callable[..., Draft]


def pick(rng: random.Random, subtypes: Sequence[tuple[float, Generator]], *args) -> Draft:
    """Try subtypes in an order drawn by weight until one is feasible for the scene or chart in args."""
    remaining = list(subtypes)
    while remaining:
        weights = [w for w, _ in remaining]
        k = rng.choices(range(len(remaining)), weights=weights)[0]
        _, fn = remaining.pop(k)
        try:
            return fn(*args, rng)
        except Infeasible:
            continue
    raise Infeasible("no subtype fits")


def template(rng: random.Random, options: Sequence[str], **fields) -> str:
    """One of several wordings, filled in."""
    return rng.choice(options).format(**fields)
