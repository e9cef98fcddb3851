"""Shapes-MMBench: four-option multiple choice on held-out scenes, with CircularEval rows, scored by `mmbench.score`.

- One `multiple_choice` item (world/qa_choice.py: colour, shape, position, count, which is present, which is NOT
  present) per scene; `n_per_split` questions (groups).
- Rows have mmbench.load()'s shape: {id, group, rotation, question (the stem), hint None, options {A..D},
  option_columns 4, answer, category, l2_category, image None, source, split} plus `scene`. Rotation 0 has the
  world's option order; `mmbench.expand_rotations` adds rotations k = 1..3 (options shifted left by k, answer
  relabelled) as rows `group + k * 10**6`, exactly as LLaVA's `--all-rounds` does.
- Category = the question subtype; l2_category = the MMBench L2 group it belongs to (MMBench files perception of
  attributes, positions and counts of single objects under fine-grained instance-level perception, and what is
  or is not in an image under coarse perception).
- Prompt: LLaVA's MMBench prompt (options as "A. text" lines, then "Answer with the option's letter from the
  given choices directly."), via `mmbench.build_model_prompts`. Scored by `mmbench.score` with protocol
  "opencompass" and no judge (unreadable replies are wrong): CircularEval (headline) and VanillaEval.
"""
from __future__ import annotations

from mmalign_utils.bench import mmbench
from mmalign_utils.bench.shapes.common import AnswerRequest, bench_scenes, edition_score, item_rng, metric
from mmalign_utils.world.qa import make_items

EDITION = "shapes-mmbench"
PROTOCOL = "opencompass"
L2_CATEGORY = {
    "color": "finegrained_perception (instance-level)", "shape": "finegrained_perception (instance-level)",
    "position": "finegrained_perception (instance-level)", "count": "finegrained_perception (instance-level)",
    "presence": "coarse_perception", "absence": "coarse_perception",
}


def build(n_per_split: int = 300, seed: int = 0, exclude_keys: set | None = None) -> list[dict]:
    """`n_per_split` question groups, each with its 4 CircularEval rotations (4 * n_per_split rows)."""
    if n_per_split < 1:
        raise ValueError(f"{EDITION}: n_per_split must be at least 1, got {n_per_split}")
    rng = item_rng(EDITION, seed)
    first_rows = []
    for group, scene in zip(range(n_per_split), bench_scenes(EDITION, seed, exclude_keys)):
        qa = make_items(scene, "multiple_choice", rng, n=1)[0]
        category = qa.extra["subtype"].removeprefix("mc_")
        first_rows.append({
            "id": group, "group": group, "rotation": 0, "question": qa.extra["stem"], "hint": None,
            "options": dict(zip(mmbench.LETTERS, qa.options)), "option_columns": len(qa.options),
            "answer": qa.answer_letter, "category": category, "l2_category": L2_CATEGORY[category], "image": None,
            "source": "shapesworld", "split": "dev", "scene": scene.to_dict(),
        })
    return mmbench.expand_rotations(first_rows)


def requests(items: list[dict]) -> list[AnswerRequest]:
    prompts = mmbench.build_model_prompts(items, protocol=PROTOCOL)
    return [AnswerRequest(id=p["question_id"], text=p["text"], scene=it["scene"], choices=tuple(it["options"]))
            for p, it in zip(prompts, items)]


def score(items: list[dict], answers: dict, judge=None) -> dict:
    """mmbench.score (opencompass rules, no extractor judge): CircularEval, VanillaEval, per category."""
    official = mmbench.score(items, {str(k): v for k, v in answers.items()}, protocol=PROTOCOL)
    groups = official["per_group"]
    n_groups = len(groups)
    first_hits = [float(rec["pred"] == rec["answer"]) for rec in official["per_item"] if rec["rotation"] == 0]
    metrics = [metric("all", "circular_acc", official["circular_acc"], n_groups, [g["hit"] for g in groups], "mean"),
               metric("all", "vanilla_acc", official["vanilla_acc"], len(first_hits), first_hits, "mean")]
    for category, value in official["circular"]["category"].items():
        hits = [g["hit"] for g in groups if g["category"] == category]
        metrics.append(metric(category, "circular_acc", value, len(hits), hits, "mean"))
    return edition_score(EDITION, f"{EDITION} v1: mmbench.score protocol={PROTOCOL}, no extractor judge", "",
                         "circular_acc", metrics, official)
