"""Shapes-POPE: POPE's yes/no object-existence questions on held-out ShapesWorld scenes, scored by `pope.score`.

Construction (POPE's, translated: objects are colour-shape combinations):
- The same scenes serve all three splits. Per scene, m = min(3, distinct combinations present) combinations
  present in the scene are asked about (label yes), the same ones in every split, as POPE reuses its yes
  questions; and m absent combinations (label no) chosen by the split's strategy:
    random       uniform over the absent combinations;
    popular      the absent combinations with the highest prior weight (`vocab.COMBO_WEIGHTS`), ties in random
                 order: frequent in the data, not in this image;
    adversarial  confusers first: a colour of a present object bound to the shape of another present object
                 (red circle + blue square -> "blue circle"), then absent combinations sharing a colour or a shape
                 with a present object, each group in random order.
  These are `world.qa_basic.negative_combo`'s definitions, extended to m distinct negatives per scene.
- Questions alternate yes, no, yes, no ... and every split has exactly `n_per_split` questions (rounded down to
  an even number), half yes and half no.
- Question: "Is there a/an {colour} {shape} in the image?" (POPE's template, with the article agreeing).
- Items have pope.load()'s shape: {id: "<split>-<question_id>", question_id (1.. per split), split, category,
  question, image, image_path, label}, plus `scene` (the scene graph, rendered on demand) and `query`.
- Answers are scored by `pope.score` with protocol "llava" (the paper's).
"""
from __future__ import annotations

import random

from mmalign_utils.bench import pope
from mmalign_utils.bench.shapes.common import (
    YES_NO, YES_NO_ALIASES, AnswerRequest, bench_scenes, edition_score, item_rng, metric,
)
from mmalign_utils.world import vocab
from mmalign_utils.world.phrasing import with_article
from mmalign_utils.world.scenes import Scene

EDITION = "shapes-pope"
QUESTIONS_PER_SCENE = 3  # POPE asks 3 yes and 3 no questions per image
PROTOCOL = "llava"


def absent_combos(scene: Scene) -> list[tuple[str, str]]:
    present = scene.combos()
    return [(c, s) for c in vocab.COLORS for s in vocab.SHAPES if (c, s) not in present]


def negative_combos(scene: Scene, strategy: str, k: int, rng: random.Random) -> list[tuple[str, str]]:
    """k distinct absent (colour, shape) combinations chosen by a POPE strategy (see the module docstring)."""
    absent = absent_combos(scene)
    if strategy == "random":
        ranked = rng.sample(absent, len(absent))
    elif strategy == "popular":
        shuffled = rng.sample(absent, len(absent))
        ranked = sorted(shuffled, key=lambda combo: -vocab.COMBO_WEIGHTS[combo])  # stable: ties stay shuffled
    elif strategy == "adversarial":
        present = scene.combos()
        swaps = sorted({(a.color, b.shape) for a in scene.objects for b in scene.objects} - present)
        colors, shapes = {o.color for o in scene.objects}, {o.shape for o in scene.objects}
        sharing = sorted(c for c in absent if c not in swaps and (c[0] in colors or c[1] in shapes))
        ranked = rng.sample(swaps, len(swaps)) + rng.sample(sharing, len(sharing))
    else:
        raise ValueError(f"POPE strategy must be one of {pope.SPLITS}, got {strategy!r}")
    if len(ranked) < k:
        raise ValueError(f"scene {scene.seed}: only {len(ranked)} {strategy} negatives, {k} needed")
    return ranked[:k]


def question_text(color: str, shape: str) -> str:
    return f"Is there {with_article(f'{color} {shape}')} in the image?"


def build(n_per_split: int = 300, seed: int = 0, exclude_keys: set | None = None) -> list[dict]:
    """The three splits, `n_per_split` questions each (rounded down to even), balanced yes/no."""
    n_pairs = n_per_split // 2
    if n_pairs < 1:
        raise ValueError(f"{EDITION}: n_per_split must be at least 2 (one yes and one no question), got {n_per_split}")
    rng = item_rng(EDITION, seed)
    items: list[dict] = []
    next_id = dict.fromkeys(pope.SPLITS, 1)
    pairs_done = 0
    for scene in bench_scenes(EDITION, seed, exclude_keys):
        m = min(QUESTIONS_PER_SCENE, len(scene.combos()), n_pairs - pairs_done)
        positives = rng.sample(sorted(scene.combos()), m)
        for split in pope.SPLITS:
            negatives = negative_combos(scene, split, m, rng)
            for yes, no in zip(positives, negatives):
                for (color, shape), label in ((yes, "yes"), (no, "no")):
                    qid = next_id[split]
                    next_id[split] += 1
                    items.append({
                        "id": pope.item_id(split, qid), "question_id": qid, "split": split, "category": split,
                        "question": question_text(color, shape), "image": f"shapes-{scene.seed}.png",
                        "image_path": None, "label": label, "scene": scene.to_dict(),
                        "query": {"color": color, "shape": shape},
                    })
        pairs_done += m
        if pairs_done >= n_pairs:
            return items
    raise AssertionError("unreachable: bench_scenes is endless")


def requests(items: list[dict]) -> list[AnswerRequest]:
    """POPE's prompt as LLaVA ran it: the question plus the short-answer suffix."""
    prompts = pope.build_model_prompts(items, protocol=PROTOCOL)
    return [AnswerRequest(id=p["question_id"], text=p["text"], scene=it["scene"], choices=YES_NO,
                          choice_aliases=YES_NO_ALIASES) for p, it in zip(prompts, items)]


def score(items: list[dict], answers: dict, judge=None) -> dict:
    """pope.score (protocol llava) and the metrics: per split F1/acc/precision/recall/yes-ratio, mean F1."""
    official = pope.score(items, answers, protocol=PROTOCOL)
    rows = official["per_item"]
    split_index = {s: i for i, s in enumerate(pope.SPLITS)}
    codes = [[split_index[r["split"]], r["label"] == "yes", r["pred"] == "yes"] for r in rows]
    metrics = [metric("all", "f1_mean", official["f1_mean"], len(rows), codes, "f1_mean_splits"),
               metric("all", "acc_mean", official["acc_mean"], len(rows),
                      [float(r["pred"] == r["label"]) for r in rows], "mean")]
    for split, m in official["splits"].items():
        in_split = [r for r in rows if r["split"] == split]
        pairs = [[r["label"] == "yes", r["pred"] == "yes"] for r in in_split]
        metrics += [
            metric(split, "f1", m["f1"], m["n"], pairs, "f1"),
            metric(split, "acc", m["acc"], m["n"], [float(r["pred"] == r["label"]) for r in in_split], "mean"),
            metric(split, "precision", m["precision"], m["n"]),
            metric(split, "recall", m["recall"], m["n"]),
            metric(split, "yes_ratio", m["yes_ratio"], m["n"], [float(r["pred"] == "yes") for r in in_split], "mean"),
        ]
    return edition_score(EDITION, f"{EDITION} v1: pope.score protocol={PROTOCOL}", "", "f1_mean", metrics, official)
