"""The registry of ShapesWorld benchmark editions: how to build each one's items, what to ask the model, how to
score the answers, and which paper benchmark it stands for.

    from mmalign_utils.bench.shapes.editions import EDITIONS, get_edition
    ed = get_edition("shapes-pope")
    items = ed.build(n_per_split=100, seed=0)          # official item shape + "scene"
    reqs = ed.requests(items)                          # AnswerRequest per answer the scorer needs
    result = ed.score(items, {r.id: "Yes" for r in reqs}, judge=None)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mmalign_utils.bench.shapes import hallucination, mmbench_edition, open_ended, pope_edition, text_editions


@dataclass(frozen=True)
class Edition:
    name: str
    stands_for: str  # the original benchmark (module in mmalign_utils.bench)
    build: Callable[..., list[dict]]  # (n_per_split, seed, exclude_keys=None, **options) -> items
    requests: Callable[[list[dict]], list]  # items -> [AnswerRequest]
    score: Callable[..., dict]  # (items, answers, judge=None, **options) -> edition score dict
    judge: str  # "none" | "oracle" (the ShapesWorld oracle unless another judge is given) | "llm" (required)
    n_meaning: str  # what n_per_split counts
    default_n: int | None = 100


EDITIONS: dict[str, Edition] = {e.name: e for e in (
    Edition("shapes-pope", "pope", pope_edition.build, pope_edition.requests, pope_edition.score, "none",
            "questions per split (3 splits)"),
    Edition("shapes-mmbench", "mmbench", mmbench_edition.build, mmbench_edition.requests, mmbench_edition.score,
            "none", "questions (each asked in 4 rotations)"),
    Edition("shapes-objhal", "objhal", hallucination.build_objhal, hallucination.objhal_requests,
            hallucination.score_objhal, "none", "descriptions"),
    Edition("shapes-amber", "amber", hallucination.build_amber, hallucination.amber_requests,
            hallucination.score_amber, "none", "descriptions, and questions per discriminative dimension"),
    Edition("shapes-llavabench", "llavabench", open_ended.build_llavabench, open_ended.requests_llavabench,
            open_ended.score_llavabench, "oracle", "questions per category (conv, detail, complex)", 20),
    Edition("shapes-mmvet", "mmvet", open_ended.build_mmvet, open_ended.requests_mmvet, open_ended.score_mmvet,
            "oracle", "questions per family (5 families)", 20),
    Edition("shapes-mmhal", "mmhal", open_ended.build_mmhal, open_ended.requests_mmhal, open_ended.score_mmhal,
            "oracle", "questions per MMHal question type (8 types)", 10),
    Edition("textsuite", "textsuite", text_editions.build_textsuite, text_editions.requests_textsuite,
            text_editions.score_textsuite, "none", "prompts (None = all held-out prompts)", None),
    Edition("text-mtbench", "mtbench", text_editions.build_mtbench, text_editions.requests_mtbench,
            text_editions.score_mtbench, "llm", "prompts (None = all held-out prompts)", None),
    Edition("text-alpacaeval", "alpacaeval", text_editions.build_alpacaeval, text_editions.requests_alpacaeval,
            text_editions.score_alpacaeval, "llm", "prompts (None = all held-out prompts)", None),
)}
ALIASES = {"shapes-chair": "shapes-objhal"}
OFFLINE_EDITIONS = tuple(name for name, e in EDITIONS.items() if e.judge != "llm")


def get_edition(name: str) -> Edition:
    name = ALIASES.get(name, name)
    if name not in EDITIONS:
        raise ValueError(f"unknown edition {name!r}; choose from {sorted(EDITIONS)} (aliases: {ALIASES})")
    return EDITIONS[name]
