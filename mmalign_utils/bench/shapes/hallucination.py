"""Shapes-ObjHal (CHAIR) and Shapes-AMBER: hallucination in descriptions of held-out scenes, scored by the
official `objhal.score` (rule path) and `amber.score`, with ShapesWorld's grounding checker as the object finder.

Objects are colour-shape classes. The official scorers find object words with a tokeniser, a lemmatiser and a
synonym table (COCO's, AMBER's relation.json). Here `world.grounding.extract_mentions` finds the object
mentions instead (shape synonyms and plurals, colour and size words, negation), and each asserted mention
becomes one class token, handed to the official scorer through its pluggable NLP toolkit:

    "a large red ball"    -> "red circle"         "two circles"      -> "circle"
    "a red object"        -> "red object"         "a pink hexagon"   -> "pink hexagon" (never in a scene)
    "there is no star", questions, comparisons    -> nothing (not claims)

So the scorers' own arithmetic runs unchanged on ShapesWorld classes:
- Shapes-ObjHal (`objhal.score`, protocol "rule"): the ground truth of a scene is every class it satisfies:
  its colour-shape combinations, their bare shapes and "<colour> object". A mention is hallucinated when its
  class is not in that set, i.e. when no object has the stated shape and colour (the grounding checker's
  identity rule; a wrong size or position is not an object hallucination). CHAIRs, CHAIRs_refine (headline) and
  CHAIRi as RLHF-V computes them. obj_rec is class recall over that generalised set, so a description naming
  every object as "red circle" still misses the bare "circle" classes: use Shapes-AMBER's Cover for coverage.
- Shapes-AMBER (`amber.score`): truth = the scene's distinct colour-shape combinations; hallu = the adversarial
  confusers (a present colour on another present shape, else absent combinations sharing a colour or shape);
  relation.json analogue: each combination is associated with its bare shape and "<colour> object" (so "a
  circle" covers a red circle, and a bare "circle" in a circle-free scene counts against a confuser circle);
  no safe words. CHAIR, Cover, Hal, Cog x100. Discriminative questions (answers "Yes"/"No", "No" positive):
    existence   "Is there a/an X in this image?" about a confuser: label always no (as AMBER's existence set)
    attribute   state: "Is the X large/small?" (X unique in colour and shape), number: "Is there one X / Are
                there two Xs in this image?"; 50/50 yes/no
    relation    "Is the X next to the Y?" (cells sharing a side); 50/50, yes rows typed "discriminative-relation"
                and no rows "relation", as AMBER's annotations
"""
from __future__ import annotations

import random
from collections.abc import Iterator

from mmalign_utils.bench import amber, objhal
from mmalign_utils.bench.nlp import NLPToolkit
from mmalign_utils.bench.shapes.common import (
    YES_NO, YES_NO_ALIASES, AnswerRequest, bench_scenes, edition_score, item_rng, metric,
)
from mmalign_utils.bench.shapes.pope_edition import negative_combos
from mmalign_utils.world import vocab
from mmalign_utils.world.grounding import Mention, extract_mentions
from mmalign_utils.world.phrasing import number_word, with_article
from mmalign_utils.world.qa_long import DESCRIBE_QUESTIONS
from mmalign_utils.world.scenes import Scene

OBJHAL = "shapes-objhal"
AMBER = "shapes-amber"
AMBER_DESCRIBE = "Describe this image."  # AMBER's generative query

_ALL_COLORS = tuple(dict.fromkeys(vocab.COLOR_WORDS.values()))  # the world's colours, then other colour words
_ALL_SHAPES = vocab.SHAPES + vocab.OUT_OF_WORLD_SHAPES


# ----------------------------------------------------------------------------------------------- class tokens

def mention_class(mention: Mention) -> str | None:
    """The class token of an asserted mention ("red circle", "circle", "red object", "pink hexagon"); None for
    denied, compared or asked-about mentions and for bare "objects"/"shapes" without a colour."""
    if not mention.claim or mention.negated:
        return None
    if mention.shape is None and mention.color is None:
        return None
    noun = mention.shape if mention.shape is not None else "object"
    return f"{mention.color} {noun}" if mention.color else noun


def claimed_classes(text: str) -> list[str]:
    """Class tokens of every asserted object mention in a text, in order."""
    return [c for c in (mention_class(m) for m in extract_mentions(text)) if c is not None]


def class_vocabulary() -> list[str]:
    """Every token `mention_class` can return."""
    tokens = [f"{c} {n}" for c in _ALL_COLORS for n in (*_ALL_SHAPES, "object")]
    return tokens + list(_ALL_SHAPES)


def grounding_toolkit() -> NLPToolkit:
    """The official scorers' NLP slot filled with the grounding checker: tokens are class tokens."""
    return NLPToolkit(tokenize=claimed_classes, lemmatize=lambda word: word, pos_tag=None,
                      tokenizer_name="shapesworld grounding mentions", lemmatizer_name="identity",
                      tagger_name="none (class tokens)")


def scene_classes(scene: Scene) -> set[str]:
    """Every class a scene satisfies: its combinations, their bare shapes and "<colour> object"."""
    return ({f"{o.color} {o.shape}" for o in scene.objects} | {o.shape for o in scene.objects}
            | {f"{o.color} object" for o in scene.objects})


def objhal_synonyms() -> objhal.Synonyms:
    return objhal.Synonyms.from_lines(class_vocabulary())


def amber_relation() -> dict[str, list[str]]:
    relation: dict[str, list[str]] = {token: [] for token in class_vocabulary()}
    for color in vocab.COLORS:
        for shape in vocab.SHAPES:
            relation[f"{color} {shape}"] = [shape, f"{color} object"]
    return relation


def confusers(scene: Scene) -> list[str]:
    """AMBER's `hallu` list for a scene: swapped attributes first, else absent combinations sharing one."""
    present = scene.combos()
    swaps = sorted({(a.color, b.shape) for a in scene.objects for b in scene.objects} - present)
    if swaps:
        return [f"{c} {s}" for c, s in swaps]
    colors, shapes = {o.color for o in scene.objects}, {o.shape for o in scene.objects}
    return [f"{c} {s}" for c in vocab.COLORS for s in vocab.SHAPES
            if (c, s) not in present and (c in colors or s in shapes)]


# ----------------------------------------------------------------------------------------------- Shapes-ObjHal

def build_objhal(n_per_split: int = 300, seed: int = 0, exclude_keys: set | None = None) -> list[dict]:
    """`n_per_split` description prompts, objhal.load()'s item shape plus `scene`."""
    rng = item_rng(OBJHAL, seed)
    items = []
    for i, scene in zip(range(n_per_split), bench_scenes(OBJHAL, seed, exclude_keys)):
        items.append({"id": i, "org_idx": i, "image_id": scene.seed, "question": rng.choice(DESCRIBE_QUESTIONS),
                      "image": None, "gt_objects": sorted(scene_classes(scene)), "scene": scene.to_dict()})
    return items


def objhal_requests(items: list[dict]) -> list[AnswerRequest]:
    return [AnswerRequest(id=it["id"], text=it["question"], scene=it["scene"]) for it in items]


def score_objhal(items: list[dict], answers: dict, judge=None) -> dict:
    official = objhal.score(items, answers, protocol="rule", synonyms=objhal_synonyms(), nlp=grounding_toolkit())
    rows = official["per_item"]
    n = len(rows)
    any_hall = [float(bool(r["hallucinated"])) for r in rows]
    has_mention = [float(bool(r["mentions"])) for r in rows]
    metrics = [
        metric("all", "CHAIRs", official["CHAIRs"], n, any_hall, "mean"),
        metric("all", "CHAIRs_refine", official["CHAIRs_refine"], int(sum(has_mention)),
               [[h, m] for h, m in zip(any_hall, has_mention)], "ratio"),
        metric("all", "CHAIRi", official["CHAIRi"], official["coco_mentions"],
               [[len(r["hallucinated"]), len(r["mentions"])] for r in rows], "ratio"),
        metric("all", "obj_rec", official["obj_rec"], n,
               [[len({c for _, c in r["mentions"]} & set(r["gt_objects"])), len(r["gt_objects"])] for r in rows],
               "ratio"),
        metric("all", "avg_word_len", official["avg_word_len"], n),
    ]
    return edition_score(OBJHAL, f"{OBJHAL} v1: objhal.score protocol=rule, grounding-checker class tokens", "",
                         "CHAIRs_refine", metrics, official)


# ----------------------------------------------------------------------------------------------- Shapes-AMBER

def _unique_objects(scene: Scene) -> list[int]:
    return [i for i, o in enumerate(scene.objects) if scene.count(shape=o.shape, color=o.color) == 1]


def _existence(scene: Scene, rng: random.Random, want_yes: bool) -> tuple[str, str] | None:
    (color, shape), = negative_combos(scene, "adversarial", 1, rng)
    return f"Is there {with_article(f'{color} {shape}')} in this image?", "no"


def _state(scene: Scene, rng: random.Random, want_yes: bool) -> tuple[str, str] | None:
    singles = _unique_objects(scene)
    if not singles:
        return None
    o = scene.objects[rng.choice(singles)]
    size = o.size if want_yes else ("small" if o.size == "large" else "large")
    return f"Is the {o.color} {o.shape} {size}?", "yes" if want_yes else "no"


def _number(scene: Scene, rng: random.Random, want_yes: bool) -> tuple[str, str] | None:
    shape = rng.choice(sorted({o.shape for o in scene.objects}))
    truth = scene.count(shape=shape)
    n = truth if want_yes else rng.choice([k for k in (truth - 1, truth + 1) if k >= 1])
    noun = shape if n == 1 else vocab.plural(shape)
    verb = "Is" if n == 1 else "Are"
    return f"{verb} there {number_word(n)} {noun} in this image?", "yes" if want_yes else "no"


def _relation(scene: Scene, rng: random.Random, want_yes: bool) -> tuple[str, str] | None:
    singles = _unique_objects(scene)
    pairs = [(i, j) for i in singles for j in singles if i < j and scene.holds(i, "next_to", j) == want_yes]
    if not pairs:
        return None
    i, j = rng.choice(pairs)
    a, b = scene.objects[i], scene.objects[j]
    return f"Is the {a.color} {a.shape} next to the {b.color} {b.shape}?", "yes" if want_yes else "no"


# (type, generator); AMBER types the yes rows of relation as "discriminative-relation" and the no rows "relation"
_DISCRIMINATIVE = (
    ("existence", None, _existence),
    ("attribute", "state", _state),
    ("attribute", "number", _number),
    ("relation", None, _relation),
)
_TYPES = {("existence", None): "discriminative-hallucination",
          ("attribute", "state"): "discriminative-attribute-state",
          ("attribute", "number"): "discriminative-attribute-number"}


def _discriminative_items(scenes: Iterator[Scene], rng: random.Random, dimension: str, sub: str | None, generator,
                          n: int, start: int = 0) -> list[dict]:
    """n questions alternating yes, no, ... (existence: always no); `start` continues another run's alternation."""
    out = []
    while len(out) < n:
        scene = next(scenes)
        want_yes = (start + len(out)) % 2 == 0 and dimension != "existence"
        made = generator(scene, rng, want_yes)
        if made is None:
            continue
        question, label = made
        kind = _TYPES.get((dimension, sub)) or ("discriminative-relation" if label == "yes" else "relation")
        out.append({"question": question, "label": label, "type": kind, "dimension": dimension,
                    "sub_dimension": sub, "category": dimension, "scene": scene.to_dict()})
    return out


def build_amber(n_per_split: int = 300, seed: int = 0, exclude_keys: set | None = None,
                discriminative: bool = True) -> list[dict]:
    """`n_per_split` generative items, then (if discriminative) n_per_split existence, n_per_split attribute
    (half state, half number) and n_per_split relation questions, labels alternating yes/no within a dimension
    (existence: all no). Ids 1.. as AMBER's (generative first)."""
    rng = item_rng(AMBER, seed)
    scenes = bench_scenes(AMBER, seed, exclude_keys)
    items: list[dict] = []
    for _, scene in zip(range(n_per_split), scenes):
        items.append({"question": AMBER_DESCRIBE, "type": "generative", "dimension": "generative",
                      "sub_dimension": None, "category": "generative", "truth": sorted({f"{o.color} {o.shape}"
                                                                                        for o in scene.objects}),
                      "hallu": confusers(scene), "scene": scene.to_dict()})
    if discriminative:
        items += _discriminative_items(scenes, rng, "existence", None, _existence, n_per_split)
        n_state = (n_per_split + 1) // 2
        items += _discriminative_items(scenes, rng, "attribute", "state", _state, n_state)
        items += _discriminative_items(scenes, rng, "attribute", "number", _number, n_per_split - n_state, n_state)
        items += _discriminative_items(scenes, rng, "relation", None, _relation, n_per_split)
    for k, item in enumerate(items, 1):
        scene_seed = item["scene"]["seed"]
        item.update({"id": k, "image": f"shapes-{scene_seed}.png", "image_path": None})
    return items


def amber_requests(items: list[dict]) -> list[AnswerRequest]:
    out = []
    for it in items:
        if it["dimension"] == "generative":
            out.append(AnswerRequest(id=it["id"], text=it["question"], scene=it["scene"]))
        else:
            out.append(AnswerRequest(id=it["id"], text=it["question"], scene=it["scene"], choices=YES_NO,
                                     choice_aliases=YES_NO_ALIASES))
    return out


def score_amber(items: list[dict], answers: dict, judge=None) -> dict:
    official = amber.score(items, answers, relation=amber_relation(), safe_words=[], nlp=grounding_toolkit(),
                           only_answered=True)
    metrics = []
    generative = [r for r in official["per_item"] if r["dimension"] == "generative"]
    if generative:
        g = official["generative"]
        metrics += [
            metric("generative", "CHAIR", g["CHAIR"], g["n"],
                   [[len(r["hallucinated"]), len(r["mentions"])] for r in generative], "ratio", 100),
            metric("generative", "Cover", g["Cover"], g["n"],
                   [[sum(r["covered"]), len(r["covered"])] for r in generative], "ratio", 100),
            metric("generative", "Hal", g["Hal"], g["n"], [float(bool(r["hallucinated"])) for r in generative],
                   "mean", 100),
            metric("generative", "Cog", g["Cog"], g["n"],
                   [[sum(r["cog_hit"]), len(r["cog_hit"])] for r in generative], "ratio", 100),
        ]
    rows = [r for r in official["per_item"] if r["dimension"] != "generative"]
    for name, in_dim in (("all", rows), *((d, [r for r in rows if r["dimension"] == d])
                                          for d in ("existence", "attribute", "relation"))):
        if not in_dim:
            continue
        m = official["discriminative"][name]
        correct = [float(r["answer"] == ("Yes" if r["label"] == "yes" else "No")) for r in in_dim]
        pairs = [[r["label"] != "yes", r["answer"] == "No"] for r in in_dim]
        metrics += [metric(f"discriminative-{name}", "acc", m["acc"], m["n"], correct, "mean", 100),
                    metric(f"discriminative-{name}", "f1", m["f1"], m["n"], pairs, "f1", 100)]
    if "amber_score" in official:
        metrics.append(metric("all", "amber_score", official["amber_score"], official["n"]))
    headline = "CHAIR" if generative else "f1"
    return edition_score(AMBER, f"{AMBER} v1: amber.score (official rules), grounding-checker class tokens", "",
                         headline, metrics, official)
