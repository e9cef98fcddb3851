"""SteerLM at inference: ask a SteerLM-trained model for answers with chosen attribute values, and sweep them.

Training (sft.py with preference.build_steerlm data) writes each answer's own attributes after the question;
at inference the same string carries the attributes we want. The paper set all five to 4
(`steerlm_question(question, ALL_FOURS)`), and also tried complexity 2 / verbosity 2.

    answers = generate_steered(model, processor, items)                          # all 4s
    answers = generate_steered(model, processor, items, steer_attributes(verbosity=1))
    table = attribute_sweep(model, processor, items)        # verbosity 0..4 and complexity 0..4, others at 4
    sweep_summary(table)                                    # mean length per value + Spearman rho with length

A scorer is any `f(item, answer) -> float` (a judge, a rule checker); `attribute_sweep(..., scorers={"acc": f})`
adds one column per scorer, averaged by `sweep_summary` like the lengths.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmalign_utils.generate import Conversation, GenerationSettings, generate
from mmalign_utils.preference import ALL_FOURS, ATTRIBUTES, check_scores, steerlm_question, word_count

Scorer = Callable[["SteerItem", str], float]
DEFAULT_SWEEP: dict[str, tuple[int, ...]] = {"verbosity": (0, 1, 2, 3, 4), "complexity": (0, 1, 2, 3, 4)}


@dataclass
class SteerItem:
    """One question to steer; `image` None asks a text-only question (e.g. MT-Bench-style prompts)."""

    question: str
    image: Any = None
    item_id: str = ""


def steer_attributes(base: Mapping[str, int] = ALL_FOURS, **changes: int) -> dict[str, int]:
    """`base` (default all 4s) with some attributes changed, checked to be integers 0-4."""
    attributes = {**base, **changes}
    unknown = sorted(set(attributes) - set(ATTRIBUTES))
    if unknown:
        raise ValueError(f"unknown SteerLM attributes {unknown}; the attributes are {list(ATTRIBUTES)}")
    check_scores(attributes, "SteerLM attributes")
    return attributes


def steered_conversation(item: SteerItem, attributes: Mapping[str, int] = ALL_FOURS) -> Conversation:
    """The user turn as in training: the image part, then the question, a newline and the attribute string."""
    return Conversation.user(steerlm_question(item.question, attributes), image=item.image)


def _as_items(items: Iterable[SteerItem | str]) -> list[SteerItem]:
    return [item if isinstance(item, SteerItem) else SteerItem(question=str(item), item_id=str(i))
            for i, item in enumerate(items)]


def generate_steered(model, processor, items: Sequence[SteerItem | str],
                     attributes: Mapping[str, int] = ALL_FOURS, settings: GenerationSettings | None = None,
                     generate_fn: Callable = generate) -> list[str]:
    """Answers of a SteerLM model to `items` under one attribute setting (greedy by default)."""
    attributes = steer_attributes(attributes)
    conversations = [steered_conversation(item, attributes) for item in _as_items(items)]
    return list(generate_fn(model, processor, conversations, settings or GenerationSettings(), progress=False))


def attribute_sweep(model, processor, items: Sequence[SteerItem | str],
                    sweep: Mapping[str, Iterable[int]] | None = None, base: Mapping[str, int] = ALL_FOURS,
                    mode: str = "each", settings: GenerationSettings | None = None,
                    scorers: Mapping[str, Scorer] | None = None, generate_fn: Callable = generate):
    """Answer every item under each attribute setting of the sweep; one row per (setting, item).

    mode "each": vary one attribute at a time, the others at `base` (verbosity 0..4, then complexity 0..4);
    mode "grid": every combination of the swept values. Columns: setting (e.g. "verbosity=2" or
    "complexity=1,verbosity=3"), one column per swept attribute, item_id, question, answer, words, tokens, and one
    column per scorer.
    """
    import itertools

    import pandas as pd

    sweep = {k: tuple(v) for k, v in (sweep or DEFAULT_SWEEP).items()}
    steer_attributes(base)
    items = _as_items(items)
    if mode == "each":
        settings_list = [{name: value} for name, values in sweep.items() for value in values]
    elif mode == "grid":
        names = list(sweep)
        settings_list = [dict(zip(names, combo)) for combo in itertools.product(*(sweep[n] for n in names))]
    else:
        raise ValueError(f"mode must be 'each' or 'grid', got {mode!r}")
    tokenizer = getattr(processor, "tokenizer", processor)
    rows = []
    for changes in settings_list:
        attributes = steer_attributes(base, **changes)
        answers = generate_steered(model, processor, items, attributes, settings, generate_fn)
        label = ",".join(f"{k}={v}" for k, v in sorted(changes.items()))
        for item, answer in zip(items, answers):
            row = {"setting": label, **{name: attributes[name] for name in sweep}, "item_id": item.item_id,
                   "question": item.question, "answer": answer, "words": word_count(answer),
                   "tokens": len(tokenizer(answer, add_special_tokens=False)["input_ids"])}
            for name, scorer in (scorers or {}).items():
                row[name] = float(scorer(item, answer))
            rows.append(row)
    return pd.DataFrame(rows)


def sweep_summary(table, attributes: Sequence[str] | None = None):
    """Mean of words, tokens and every scorer column per value of each swept attribute ("each" sweeps: the rows
    where only that attribute moved), with the Spearman correlation of the value with the answer length."""
    import pandas as pd

    attributes = list(attributes or [a for a in ATTRIBUTES if a in table.columns])
    fixed = {"setting", "item_id", "question", "answer", *ATTRIBUTES}
    measures = [c for c in table.columns if c not in fixed]
    out = []
    for attribute in attributes:
        rows = table[table["setting"].str.contains(f"{attribute}=")]
        if rows.empty:
            continue
        means = rows.groupby(attribute)[measures].mean().reset_index()
        rho = rows[attribute].rank().corr(rows["words"].rank()) if rows[attribute].nunique() > 1 else float("nan")
        means.insert(0, "attribute", attribute)
        means = means.rename(columns={attribute: "value"})
        means["spearman_words"] = rho
        out.append(means)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


__all__ = ["DEFAULT_SWEEP", "SteerItem", "attribute_sweep", "generate_steered", "steer_attributes",
           "steered_conversation", "sweep_summary"]
