"""Open-ended editions in the styles of LLaVA-Bench, MM-Vet and MMHal-Bench, judged by the ShapesWorld oracle.

Items have the official loaders' shapes, scored by the official `score()` with the official parsing and
aggregation. The judge is the oracle (oracle_review.py) by default; any other judge (an LLM) gets the same
requests with our own judge prompts below, written for ShapesWorld: the official prompt texts are copyrighted
files we do not ship, and they are written for real photographs. Either way the score records the judge id.

- Shapes-LLaVA-Bench: questions cycle through LLaVA-Bench's categories: conv (a conversation's first turn:
  existence, colour, count, relation or "what is in this image?"), detail (a detailed description), complex
  (multi-step reasoning). Context = the scene's facts (scene graph as text), reference = the world's detailed
  answer. `n_per_split` questions per category. Headline: relative score "all" (mean candidate / mean reference
  x 100), protocol "llava".
- Shapes-MM-Vet: short_vqa, count, relation, reasoning and describe questions in turn (`n_per_split` each);
  ground truth = the short answer with its accepted alternatives joined by <OR> (a description's is the world's
  detailed answer); capabilities rec always, plus spat (positions, relations, rows), math (arithmetic and
  comparisons of counts), gen (descriptions). Headline: total (mean score x 100).
- Shapes-MMHal: MMHal's 8 question types in MMHal's order, so the official "type = position % 8" holds:
  attribute (colour/shape/size), adversarial (LRV instruction about an absent object), comparison, counting,
  relation, environment (the background), holistic (description), other (what is where). image_content = the
  objects with their cells and the background. `n_per_split` questions per type. Headline: average rating 0-6,
  with the hallucination rate (share below 3).
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from mmalign_utils.bench import llavabench, mmhal, mmvet
from mmalign_utils.bench.shapes.common import AnswerRequest, bench_scenes, edition_score, item_rng, metric
from mmalign_utils.bench.shapes.oracle_review import PayloadAttachingJudge, is_oracle
from mmalign_utils.judges.base import Judge
from mmalign_utils.judges.oracle import item_fields
from mmalign_utils.world.qa import QAItem, make_items
from mmalign_utils.world.scenes import Scene

LLAVABENCH = "shapes-llavabench"
MMVET = "shapes-mmvet"
MMHAL = "shapes-mmhal"

# ------------------------------------------------------------------------------------------------ judge prompts
# Our own wording (not the official texts); used when an LLM judges instead of the oracle.

LLAVABENCH_RULE = (
    "Two AI assistants answered the user's question about an image. You cannot see the image; the [Context] above "
    "lists everything in it and is the ground truth. Rate each answer from 1 to 10 for helpfulness, relevance, "
    "accuracy and level of detail. Naming an object, colour, size, position or number that the image does not "
    "have makes an answer inaccurate. On the first line write only the two scores, for Assistant 1 and "
    "Assistant 2, separated by a space. Then explain your scores briefly.")
LLAVABENCH_RULES = {f"llava_bench_{c}": {"role": "Assistant", "prompt": LLAVABENCH_RULE}
                    for c in llavabench.CATEGORIES}

MMVET_GRADER_PROMPT = (
    "Grade how correct a model's answer to a question about an image is, given the ground truth. In the ground "
    "truth, <AND> means every part is needed and <OR> means any one alternative is enough. Give a score from 0.0 "
    "(wrong) to 1.0 (fully correct), with partial credit for partly correct answers. Each line reads: Question | "
    "Ground truth | Prediction | Correctness. Complete the last line with the score only.\n\n"
    "What color is the star? | yellow | The star is yellow. | 1.0\n"
    "How many circles are there? | 2<OR>two | There are three circles. | 0.0\n"
    "Describe the image. | A red circle in the top left corner and a blue square in the center. | "
    "There is a red circle. | 0.5\n")

MMHAL_TEMPLATE = (
    "You are checking an AI assistant's answer to a question about an image for hallucination and "
    "informativeness. You cannot see the image; its contents are listed below with a correct standard answer.\n\n"
    "Image contents: {}\nQuestion: {}\nStandard answer: {}\nAssistant's answer: {}\n\n"
    "An answer hallucinates when it claims an object, attribute, position or number the image does not have. "
    "Use this scale:\n6: very informative with good reasoning, no hallucination\n5: very informative, no "
    "hallucination\n4: somewhat informative, no hallucination\n3: not informative, no hallucination\n2: very "
    "informative, with hallucination\n1: somewhat informative, with hallucination\n0: not informative, with "
    "hallucination\n\nExplain briefly, then end with a line of the form 'Rating: N' where N is one number from "
    "0 to 6.")

# ------------------------------------------------------------------------------------------------ drawing questions

Predicate = Callable[[QAItem], bool]


def _subtype(qa: QAItem) -> str:
    return qa.extra.get("subtype", "")


def _draw(scenes: Iterator[Scene], rng: random.Random, family: str, accept: Predicate | None = None,
          tries: int = 20) -> QAItem:
    """A question of `family` (satisfying `accept`) about the next scene that allows one."""
    for scene in scenes:
        for _ in range(tries):
            try:
                qa = make_items(scene, family, rng, n=1)[0]
            except ValueError:
                break
            if accept is None or accept(qa):
                return qa
    raise AssertionError("unreachable: bench_scenes is endless")


def _background_item(scene: Scene, rng: random.Random) -> QAItem:
    """MMHal's "environment" type: ShapesWorld's only environment is the background colour."""
    accepted = {"white": ["white"], "light gray": ["light gray", "light grey", "gray", "grey"],
                "cream": ["cream", "beige", "off white", "ivory"]}
    bg = scene.background
    rivals = [w for other, ws in accepted.items() if other != bg for w in ws]
    question = rng.choice(("What does the background of the image look like?", "What color is the background?",
                           "Describe the background of this picture."))
    return QAItem(id=f"shapes-{scene.seed}-background-0", family="short_vqa", question=question, short_answer=bg,
                  detailed_answer=f"The background is plain {bg}.", scene=scene.to_dict(), kind="shapes",
                  extra={"subtype": "background", "accepted": accepted[bg], "rivals": rivals})


def _oracle_record(qa: QAItem) -> dict:
    """What the oracle reads about a question (and the LLaVA-Bench reference answer)."""
    return {**item_fields(qa), "reference": qa.detailed_answer}


# ------------------------------------------------------------------------------------------------ Shapes-LLaVA-Bench


def build_llavabench(n_per_split: int = 20, seed: int = 0, exclude_keys: set | None = None) -> list[dict]:
    rng = item_rng(LLAVABENCH, seed)
    scenes = bench_scenes(LLAVABENCH, seed, exclude_keys)
    families = {"conv": "conversation", "detail": "describe", "complex": "reasoning"}
    items = []
    for k in range(n_per_split * len(families)):
        category = llavabench.CATEGORIES[k % len(llavabench.CATEGORIES)]
        qa = _draw(scenes, rng, families[category])
        scene = qa.visual()
        items.append({"id": k, "question": qa.question, "image": f"shapes-{scene.seed}.png", "category": category,
                      "caption": scene.facts_text().split("\n"), "reference": qa.detailed_answer,
                      "scene": qa.scene, "oracle_item": _oracle_record(qa)})
    return items


def _open_requests(items: list[dict]) -> list[AnswerRequest]:
    return [AnswerRequest(id=it["id"], text=it["question"], scene=it["scene"]) for it in items]


def _judge_and_attach(judge: Judge | None) -> tuple[Judge, PayloadAttachingJudge | None]:
    if is_oracle(judge):
        attaching = judge if isinstance(judge, PayloadAttachingJudge) else PayloadAttachingJudge(judge)
        return attaching, attaching
    return judge, None


def score_llavabench(items: list[dict], answers: dict, judge: Judge | None = None) -> dict:
    judge, attaching = _judge_and_attach(judge)
    if attaching is not None:
        for it in items:
            if it["id"] in answers:
                rule = LLAVABENCH_RULES[f"llava_bench_{it['category']}"]
                text = llavabench.review_content(it, answers[it["id"]], rule, "llava")
                attaching.expect(text, {"task": "shapes_llavabench", "question": it["question"],
                                        "answer": answers[it["id"]], "item": it["oracle_item"]})
    official = llavabench.score(items, answers, protocol="llava", judge=judge, rules=LLAVABENCH_RULES)
    pairs = {}
    for rec in official["records"]:
        pairs.setdefault(rec["category"], []).append([rec["tuple"][1], rec["tuple"][0]])
    metrics = [metric("all", "relative", official["relative"]["all"], len(official["records"]),
                      [p for v in pairs.values() for p in v], "ratio", 100)]
    for category, values in sorted(pairs.items()):
        metrics.append(metric(category, "relative", official["relative"][category], len(values), values, "ratio",
                              100))
    return edition_score(LLAVABENCH, f"{LLAVABENCH} v1: llavabench.score protocol=llava, ShapesWorld rule prompt",
                         official["judge"], "relative", metrics, official)


# ------------------------------------------------------------------------------------------------ Shapes-MM-Vet

_MMVET_FAMILIES = ("short_vqa", "count", "relation", "reasoning", "describe")
_SPATIAL = {"where", "what_at", "line_count", "neighbour_color", "relation_yesno_col", "relation_yesno_row",
            "relation_choice", "relation_next_to", "relation_neighbour", "compare_size"}
_MATH = {"not_color", "after_removal", "more_than", "which_more"}


def capabilities(qa: QAItem) -> list[str]:
    subtype = _subtype(qa)
    caps = ["rec"]
    if subtype in _SPATIAL:
        caps.append("spat")
    if subtype in _MATH:
        caps.append("math")
    if qa.family == "describe":
        caps.append("gen")
    return caps


def ground_truth(qa: QAItem) -> str:
    """MM-Vet's answer field: alternatives joined by <OR>; a description's is the detailed answer."""
    if qa.family == "describe":
        return qa.detailed_answer
    if qa.label in ("yes", "no"):
        return qa.label
    alternatives = [qa.short_answer] + [a for a in qa.extra.get("accepted", []) if a != qa.short_answer]
    return "<OR>".join(dict.fromkeys(alternatives))


def build_mmvet(n_per_split: int = 20, seed: int = 0, exclude_keys: set | None = None) -> list[dict]:
    rng = item_rng(MMVET, seed)
    scenes = bench_scenes(MMVET, seed, exclude_keys)
    items = []
    for k in range(n_per_split * len(_MMVET_FAMILIES)):
        qa = _draw(scenes, rng, _MMVET_FAMILIES[k % len(_MMVET_FAMILIES)])
        caps = capabilities(qa)
        items.append({"id": f"v1_{k}", "question": qa.question, "reference": ground_truth(qa),
                      "image": f"shapes-{qa.scene_seed}.png", "capabilities": caps,
                      "category": mmvet.combination_name(caps), "scene": qa.scene, "oracle_item": _oracle_record(qa)})
    return items


def score_mmvet(items: list[dict], answers: dict, judge: Judge | None = None) -> dict:
    judge, attaching = _judge_and_attach(judge)
    if attaching is not None:
        for it in items:
            if it["id"] in answers:
                payload = {"task": "shapes_mmvet", "question": it["question"], "answer": answers[it["id"]],
                           "item": it["oracle_item"]}
                for reask in (False, True):
                    attaching.expect(mmvet.grading_prompt(MMVET_GRADER_PROMPT, it, answers[it["id"]], reask), payload)
    official = mmvet.score(items, answers, judge=judge, grader_prompt=MMVET_GRADER_PROMPT)
    scores = {rec["id"]: rec["score"] for rec in official["records"]}
    by_id = {it["id"]: it for it in items}
    metrics = [metric("all", "total", official["total"], official["n"], list(scores.values()), "mean", 100)]
    for cap, value in official["per_capability"].items():
        values = [s for i, s in scores.items() if cap in by_id[i]["capabilities"]]
        metrics.append(metric(cap, "total", value, len(values), values, "mean", 100))
    return edition_score(MMVET, f"{MMVET} v1: mmvet.score, ShapesWorld grader prompt", official["judge"], "total",
                         metrics, official)


# ------------------------------------------------------------------------------------------------ Shapes-MMHal

_MMHAL_DRAWS: dict[str, tuple[str, Predicate | None]] = {
    "attribute": ("short_vqa", lambda qa: _subtype(qa) in ("color", "shape", "size")),
    "adversarial": ("existence", lambda qa: _subtype(qa) == "lrv" and qa.label == "no"),
    "comparison": ("reasoning", lambda qa: _subtype(qa) in ("compare_size", "more_than", "which_more")),
    "counting": ("count", None),
    "relation": ("relation", None),
    "holistic": ("describe", None),
    "other": ("short_vqa", lambda qa: _subtype(qa) in ("what_at", "where")),
}


def image_content(scene: Scene) -> list[str]:
    return [f"{o.noun_phrase()} ({o.position})" for o in scene.objects] + [f"{scene.background} background"]


def build_mmhal(n_per_split: int = 10, seed: int = 0, exclude_keys: set | None = None) -> list[dict]:
    rng = item_rng(MMHAL, seed)
    scenes = bench_scenes(MMHAL, seed, exclude_keys)
    items = []
    for k in range(n_per_split * len(mmhal.QUESTION_TYPES)):
        kind = mmhal.QUESTION_TYPES[k % len(mmhal.QUESTION_TYPES)]
        if kind == "environment":
            qa = _background_item(next(scenes), rng)
        else:
            family, accept = _MMHAL_DRAWS[kind]
            qa = _draw(scenes, rng, family, accept)
        scene = qa.visual()
        record = {"question_type": kind, "question_topic": "shapesworld", "image_id": f"shapes-{scene.seed}",
                  "image_src": None, "image_content": image_content(scene), "question": qa.question,
                  "gt_answer": qa.detailed_answer, "model_answer": ""}
        items.append({"id": k, "question": qa.question, "reference": qa.detailed_answer,
                      "image_content": record["image_content"], "image": None, "category": kind,
                      "question_type": kind, "topic": "shapesworld", "record": record, "scene": qa.scene,
                      "oracle_item": _oracle_record(qa)})
    return items


def score_mmhal(items: list[dict], answers: dict, judge: Judge | None = None) -> dict:
    judge, attaching = _judge_and_attach(judge)
    if attaching is not None:
        for it in items:
            if it["id"] in answers:
                attaching.expect(mmhal.grading_prompt(MMHAL_TEMPLATE, it, answers[it["id"]]),
                                 {"task": "shapes_mmhal", "question": it["question"], "answer": answers[it["id"]],
                                  "item": it["oracle_item"]})
    official = mmhal.score(items, answers, judge=judge, grader_template=MMHAL_TEMPLATE)
    ratings = [rec["score"] for rec in official["records"]]
    kinds = {it["id"]: it["category"] for it in items}
    metrics = [metric("all", "average", official["average"], len(ratings), ratings, "mean"),
               metric("all", "hallucination_rate", official["hallucination_rate"], len(ratings),
                      [float(r < mmhal.HALLUCINATION_BELOW) for r in ratings], "mean")]
    for kind, value in official["per_type"].items():
        values = [rec["score"] for rec in official["records"] if kinds[rec["id"]] == kind]
        metrics.append(metric(kind, "average", value, len(values), values, "mean"))
    return edition_score(MMHAL, f"{MMHAL} v1: mmhal.score, ShapesWorld grader template", official["judge"],
                         "average", metrics, official)


requests_llavabench = requests_mmvet = requests_mmhal = _open_requests
