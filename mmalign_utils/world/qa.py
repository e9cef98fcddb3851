"""Question-answer items about ShapesWorld scenes and charts, in the families the paper's data mix needs.

Families (exact names): short_vqa, describe, reasoning, conversation, existence, count, relation,
multiple_choice (shapes scenes) and chart (charts; charts also take describe and conversation).
Every item has a short reference answer and a templated detailed one; `extra` records what the answer was
computed from (subtype, target object, filters) and the accepted short answers.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mmalign_utils.world import qa_basic, qa_charts, qa_choice, qa_long
from mmalign_utils.world.charts import Chart
from mmalign_utils.world.drafts import Draft, Infeasible
from mmalign_utils.world.scenes import Scene

SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."  # LLaVA-1.5's VQA suffix
MC_SUFFIX = "Answer with the option's letter from the given choices directly."  # LLaVA-1.5's MMBench suffix

FAMILIES: tuple[str, ...] = ("short_vqa", "describe", "reasoning", "conversation", "existence", "count",
                             "relation", "multiple_choice", "chart")
SHAPES_FAMILIES: tuple[str, ...] = tuple(f for f in FAMILIES if f != "chart")
CHART_FAMILIES: tuple[str, ...] = ("chart", "describe", "conversation")

_SHAPES_GENERATORS = {
    "short_vqa": qa_basic.short_vqa, "count": qa_basic.count, "existence": qa_basic.existence,
    "relation": qa_basic.relation, "describe": qa_long.describe, "reasoning": qa_long.reasoning,
    "conversation": qa_long.conversation, "multiple_choice": qa_choice.multiple_choice,
}
_CHART_GENERATORS = {"chart": qa_charts.chart_qa, "describe": qa_charts.chart_describe,
                     "conversation": qa_charts.chart_conversation}


@dataclass
class QAItem:
    id: str
    family: str
    question: str
    short_answer: str
    detailed_answer: str
    scene: dict  # Scene.to_dict() or Chart.to_dict(); "kind" inside tells which
    kind: str  # "shapes" | "chart"
    label: str | None = None  # "yes"/"no" for yes-no questions, else None
    negative_strategy: str | None = None  # "random"/"popular"/"adversarial" for negatives, else None
    options: list[str] | None = None  # multiple_choice: the four options in order A-D
    answer_letter: str | None = None
    turns: list[tuple[str, str]] | None = None  # conversation: (user, assistant) pairs with detailed answers
    extra: dict = field(default_factory=dict)

    @property
    def scene_seed(self) -> int:
        return int(self.scene["seed"])

    def visual(self) -> Scene | Chart:
        """The Scene or Chart this item is about."""
        return Chart.from_dict(self.scene) if self.kind == "chart" else Scene.from_dict(self.scene)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["turns"] is not None:
            d["turns"] = [list(t) for t in d["turns"]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QAItem:
        d = dict(d)
        if d.get("turns") is not None:
            d["turns"] = [tuple(t) for t in d["turns"]]
        return cls(**d)


def with_short_suffix(question: str) -> str:
    """The question with LLaVA-1.5's short-answer instruction on a new line (not added twice)."""
    if question.rstrip().endswith(SHORT_ANSWER_SUFFIX):
        return question
    return f"{question}\n{SHORT_ANSWER_SUFFIX}"


def with_mc_suffix(question: str) -> str:
    """A multiple-choice question with LLaVA-1.5's MMBench letter instruction (not added twice)."""
    if question.rstrip().endswith(MC_SUFFIX):
        return question
    return f"{question}\n{MC_SUFFIX}"


def _as_rng(rng: random.Random | int | np.random.Generator) -> random.Random:
    if isinstance(rng, random.Random):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return random.Random(int(rng))
    if isinstance(rng, np.random.Generator):
        return random.Random(int(rng.integers(0, 2**31)))
    raise TypeError(f"rng must be random.Random, an int seed or a numpy Generator, got {type(rng).__name__}")


def make_items(scene_or_chart: Scene | Chart, family: str, rng: random.Random | int | np.random.Generator,
               n: int = 1) -> list[QAItem]:
    """n items of one family about one scene or chart. Ids are "<kind>-<seed>-<family>-<k>", k = 0..n-1.

    Identical questions are avoided within one call where the scene allows (up to a few retries)."""
    rng = _as_rng(rng)
    if isinstance(scene_or_chart, Chart):
        generators, kind = _CHART_GENERATORS, "chart"
    elif isinstance(scene_or_chart, Scene):
        generators, kind = _SHAPES_GENERATORS, "shapes"
    else:
        raise TypeError(f"expected a Scene or Chart, got {type(scene_or_chart).__name__}")
    if family not in generators:
        allowed = CHART_FAMILIES if kind == "chart" else SHAPES_FAMILIES
        raise ValueError(f"family {family!r} is not available for {kind} images; choose one of {allowed}")
    scene_dict = scene_or_chart.to_dict()
    items: list[QAItem] = []
    seen: set[str] = set()
    for k in range(n):
        draft: Draft | None = None
        for _ in range(8):
            try:
                draft = generators[family](scene_or_chart, rng)
            except Infeasible:
                continue
            if draft.question not in seen:
                break
        if draft is None:
            raise ValueError(f"could not generate a {family!r} item for {kind} {scene_or_chart.seed}")
        seen.add(draft.question)
        items.append(QAItem(
            id=f"{kind}-{scene_or_chart.seed}-{family}-{k}", family=family, question=draft.question,
            short_answer=draft.short_answer, detailed_answer=draft.detailed_answer, scene=scene_dict, kind=kind,
            label=draft.label, negative_strategy=draft.negative_strategy, options=draft.options,
            answer_letter=draft.answer_letter, turns=draft.turns, extra=draft.extra,
        ))
    return items
