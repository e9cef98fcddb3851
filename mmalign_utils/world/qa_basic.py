"""Short-answer question families about shapes scenes: short_vqa, count, existence (POPE/LRV-like), relation.

Every generator takes (scene, rng), returns a Draft, and raises Infeasible when its subtype does not fit the
scene. `extra` records what the answer was computed from, so tests can recompute it from the scene graph.
"""
from __future__ import annotations

import random

from mmalign_utils.world import vocab
from mmalign_utils.world.drafts import Draft, Infeasible, pick, template
from mmalign_utils.world.phrasing import capitalize, count_phrase, join_words, number_word, with_article
from mmalign_utils.world.refer import Reference, refer
from mmalign_utils.world.scenes import Scene, SceneObject
from mmalign_utils.world.vocab import COLORS, GRID, SHAPES, SIZES, plural

NEGATIVE_STRATEGIES = ("random", "popular", "adversarial")


def a_object(o: SceneObject) -> str:
    """"a large red circle in the top left corner"."""
    return f"{with_article(o.noun_phrase())} {o.position_prepositional}"


def list_objects(scene: Scene, indices: list[int]) -> str:
    return join_words([a_object(scene.objects[i]) for i in indices])


def pick_reference(scene: Scene, rng: random.Random, avoid: tuple[str, ...]) -> Reference:
    order = list(range(len(scene.objects)))
    rng.shuffle(order)
    for i in order:
        ref = refer(scene, i, avoid=avoid, rng=rng)
        if ref is not None:
            return ref
    raise Infeasible(f"no object can be described without {avoid}")


def reference_extra(ref: Reference) -> dict:
    return {"target": ref.index, "ref": ref.attrs, "ref_phrase": ref.phrase}


# ----- short_vqa ----------------------------------------------------------------------------------------------
def _color(scene: Scene, rng: random.Random) -> Draft:
    ref = pick_reference(scene, rng, ("color",))
    o = scene.objects[ref.index]
    q = template(rng, ("What color is {r}?", "What is the color of {r}?", "Which color does {r} have?",
                       "Tell me the color of {r}.", "What colour is {r}?"), r=ref.phrase)
    detail = f"{capitalize(ref.phrase)} is {o.color}. It is {a_object(o)}."
    return Draft(q, o.color, detail, extra={"subtype": "color", **reference_extra(ref), "accepted": [o.color]})


def _shape(scene: Scene, rng: random.Random) -> Draft:
    ref = pick_reference(scene, rng, ("shape",))
    o = scene.objects[ref.index]
    q = template(rng, ("What shape is {r}?", "What is the shape of {r}?", "Which shape is {r}?",
                       "What kind of shape is {r}?"), r=ref.phrase)
    detail = f"{capitalize(ref.phrase)} is {with_article(o.shape)}. It is {a_object(o)}."
    return Draft(q, o.shape, detail, extra={"subtype": "shape", **reference_extra(ref), "accepted": [o.shape]})


def _size(scene: Scene, rng: random.Random) -> Draft:
    ref = pick_reference(scene, rng, ("size",))
    o = scene.objects[ref.index]
    q = template(rng, ("Is {r} small or large?", "What size is {r}?", "Is {r} large or small?",
                       "How big is {r}: small or large?"), r=ref.phrase)
    detail = f"{capitalize(ref.phrase)} is {o.size}. It is {a_object(o)}."
    accepted = [o.size] + list(vocab.SIZE_SYNONYMS[o.size][1:3])
    return Draft(q, o.size, detail, extra={"subtype": "size", **reference_extra(ref), "accepted": accepted})


def _what_at(scene: Scene, rng: random.Random) -> Draft:
    empty = scene.empty_cells()
    if empty and rng.random() < 0.25:
        row, col = rng.choice(empty)
    else:
        o = rng.choice(scene.objects)
        row, col = o.row, o.col
    where = vocab.position_prepositional(row, col)
    q = template(rng, ("What is {w}?", "What object is {w}?", "Which object can be seen {w}?",
                       "What do you see {w}?"), w=where)
    o = scene.at(row, col)
    if o is None:
        short, detail = "nothing", f"Nothing: the cell {where} is empty."
        accepted = ["nothing", "empty", "none", "no object"]
    else:
        short = f"{o.color} {o.shape}"
        detail = f"There is {with_article(o.noun_phrase())} {where}."
        accepted = [short, o.noun_phrase(), f"{with_article(short)}", with_article(o.noun_phrase())]
    return Draft(q, short, detail, extra={"subtype": "what_at", "row": row, "col": col, "accepted": accepted})


def _where(scene: Scene, rng: random.Random) -> Draft:
    ref = pick_reference(scene, rng, ("position",))
    o = scene.objects[ref.index]
    q = template(rng, ("Where is {r}?", "Where is {r} located?", "In which part of the image is {r}?",
                       "Where in the picture can you find {r}?"), r=ref.phrase)
    detail = f"{capitalize(ref.phrase)} is {o.position_prepositional} of the image."
    accepted = [o.position, o.position_prepositional, o.position_prepositional.split(" ", 2)[2]]
    return Draft(q, o.position, detail, extra={"subtype": "where", **reference_extra(ref), "accepted": accepted})


def short_vqa(scene: Scene, rng: random.Random) -> Draft:
    return pick(rng, [(0.25, _color), (0.2, _shape), (0.15, _size), (0.2, _what_at), (0.2, _where)], scene)


# ----- count ------------------------------------------------------------------------------------------------
def count_answer(scene: Scene, filters: dict, noun: str) -> tuple[str, str]:
    """(short, detailed) for "how many <noun>" under the given filters."""
    idx = scene.matching(**filters)
    n = len(idx)
    if n == 0:
        return "0", f"There are no {plural(noun)} in the image."
    verb = "is" if n == 1 else "are"
    return str(n), f"There {verb} {count_phrase(n, noun)}: {list_objects(scene, idx)}."


def _count_draft(scene: Scene, rng: random.Random, filters: dict, noun_singular: str, questions: tuple[str, ...],
                 subtype: str) -> Draft:
    q = template(rng, questions, p=plural(noun_singular))
    short, detail = count_answer(scene, filters, noun_singular)
    n = int(short)
    return Draft(q, short, detail, extra={"subtype": subtype, "filters": filters,
                                          "accepted": [short, number_word(n)]})


_COUNT_QS = ("How many {p} are there?", "How many {p} are in the image?", "How many {p} can you see?",
             "Count the {p} in the picture.", "What is the number of {p} in the image?")


def _count_shape(scene: Scene, rng: random.Random) -> Draft:
    absent = [s for s in SHAPES if not scene.has(shape=s)]
    shape = rng.choice(absent) if absent and rng.random() < 0.2 else rng.choice(scene.objects).shape
    return _count_draft(scene, rng, {"shape": shape}, shape, _COUNT_QS, "count_shape")


def _count_color(scene: Scene, rng: random.Random) -> Draft:
    color = rng.choice(scene.objects).color
    noun = rng.choice(("object", "shape"))
    return _count_draft(scene, rng, {"color": color}, f"{color} {noun}", _COUNT_QS, "count_color")


def _count_combo(scene: Scene, rng: random.Random) -> Draft:
    o = rng.choice(scene.objects)
    return _count_draft(scene, rng, {"color": o.color, "shape": o.shape}, f"{o.color} {o.shape}", _COUNT_QS,
                        "count_combo")


def _count_size(scene: Scene, rng: random.Random) -> Draft:
    size = rng.choice(SIZES)
    return _count_draft(scene, rng, {"size": size}, f"{size} {rng.choice(('object', 'shape'))}", _COUNT_QS,
                        "count_size")


def _count_total(scene: Scene, rng: random.Random) -> Draft:
    qs = ("How many objects are in the image?", "How many shapes are there in total?",
          "How many shapes can you count in this picture?", "What is the total number of objects?")
    return _count_draft(scene, rng, {}, rng.choice(("object", "shape")), qs, "count_total")


def count(scene: Scene, rng: random.Random) -> Draft:
    return pick(rng, [(0.35, _count_shape), (0.2, _count_color), (0.15, _count_combo), (0.1, _count_size),
                      (0.2, _count_total)], scene)


# ----- existence (POPE / LRV-Instruct) ---------------------------------------------------------------------------
def negative_combo(scene: Scene, strategy: str, rng: random.Random) -> tuple[str, str]:
    """An absent (color, shape) combination chosen POPE-style.

    random: uniform over absent combinations. popular: among the absent ones with the highest prior weight
    (frequent in the data, not in this image). adversarial: a confuser: preferably a colour of one present object
    bound to the shape of another (swapped attributes), else any absent combination sharing a colour or a shape
    with a present object."""
    present = scene.combos()
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    if strategy == "random":
        return rng.choice(absent)
    if strategy == "popular":
        top = max(vocab.COMBO_WEIGHTS[c] for c in absent)
        return rng.choice([c for c in absent if vocab.COMBO_WEIGHTS[c] == top])
    if strategy == "adversarial":
        swaps = sorted({(a.color, b.shape) for a in scene.objects for b in scene.objects
                        if (a.color, b.shape) not in present})
        if swaps:
            return rng.choice(swaps)
        colors, shapes = {o.color for o in scene.objects}, {o.shape for o in scene.objects}
        return rng.choice([(c, s) for c, s in absent if c in colors or s in shapes])
    raise ValueError(f"negative strategy must be one of {NEGATIVE_STRATEGIES}, got {strategy!r}")


def _present_answer(scene: Scene, color: str | None, shape: str | None) -> str:
    idx = scene.matching(color=color, shape=shape)
    return list_objects(scene, idx)


def _everything(scene: Scene) -> str:
    return f"The image contains {list_objects(scene, list(range(len(scene.objects))))}."


def _pope(scene: Scene, rng: random.Random) -> Draft:
    positive = rng.random() < 0.5
    strategy = None
    if positive:
        color, shape = rng.choice(sorted(scene.combos()))
    else:
        strategy = rng.choice(NEGATIVE_STRATEGIES)
        color, shape = negative_combo(scene, strategy, rng)
    thing = f"{color} {shape}"
    q = template(rng, ("Is there {x} in the image?", "Is there {x} in this picture?", "Does the image contain {x}?",
                       "Can you see {x} in the image?", "Is {x} present in the image?"), x=with_article(thing))
    if positive:
        detail = f"Yes, there is {_present_answer(scene, color, shape)}."
    else:
        detail = f"No, there is no {thing} in the image. {_everything(scene)}"
    return Draft(q, "yes" if positive else "no", detail, label="yes" if positive else "no",
                 negative_strategy=strategy,
                 extra={"subtype": "pope", "query": {"color": color, "shape": shape}, "accepted": []})


def _shape_only(scene: Scene, rng: random.Random) -> Draft:
    absent = [s for s in SHAPES if not scene.has(shape=s)]
    positive = not absent or rng.random() < 0.5
    shape = rng.choice(scene.objects).shape if positive else rng.choice(absent)
    q = template(rng, ("Are there any {p} in the image?", "Is there {a} in the picture?", "Do you see any {p}?",
                       "Does this image show {a}?"), p=plural(shape), a=with_article(shape))
    if positive:
        idx = scene.matching(shape=shape)
        detail = f"Yes, there {'is' if len(idx) == 1 else 'are'} {count_phrase(len(idx), shape)}: " \
                 f"{list_objects(scene, idx)}."
    else:
        detail = f"No, there are no {plural(shape)} in the image. {_everything(scene)}"
    return Draft(q, "yes" if positive else "no", detail, label="yes" if positive else "no",
                 negative_strategy=None if positive else "random",
                 extra={"subtype": "shape_only", "query": {"shape": shape}, "accepted": []})


_LRV_QS = ("Describe the {x} in the image.", "What can you tell me about the {x}?",
           "Tell me about the {x} in this picture.", "Where is the {x}, and how big is it?",
           "Please describe the {x} and its position.")


def _lrv(scene: Scene, rng: random.Random) -> Draft:
    """LRV-Instruct-style instruction about an object; negatives name an object that is not there, or a present
    object with its size manipulated (an adversarial attribute negative)."""
    roll = rng.random()
    if roll < 0.5:  # positive: an object that is the only one of its colour and shape
        singles = [i for i, o in enumerate(scene.objects) if scene.count(shape=o.shape, color=o.color) == 1]
        if not singles:
            raise Infeasible("no object is unique in colour and shape")
        o = scene.objects[rng.choice(singles)]
        thing = f"{o.color} {o.shape}"
        q = template(rng, _LRV_QS, x=thing)
        detail = f"The {thing} is {o.size}, and it is located {o.position_prepositional} of the image."
        return Draft(q, f"{with_article(o.noun_phrase())}, {o.position}", detail, label="yes",
                     extra={"subtype": "lrv", "query": {"color": o.color, "shape": o.shape}, "accepted": []})
    if roll < 0.7:  # attribute manipulation: right colour and shape, wrong size
        flips = [(o, "small" if o.size == "large" else "large") for o in scene.objects
                 if not scene.has(shape=o.shape, color=o.color, size="small" if o.size == "large" else "large")]
        if not flips:
            raise Infeasible("every colour-shape combination appears in both sizes")
        o, wrong = rng.choice(flips)
        thing = f"{wrong} {o.color} {o.shape}"
        q = template(rng, _LRV_QS, x=thing)
        real = list_objects(scene, scene.matching(color=o.color, shape=o.shape))
        detail = f"There is no {thing} in the image. There is {real}, but it is not {wrong}."
        return Draft(q, f"There is no {thing}.", detail, label="no", negative_strategy="adversarial",
                     extra={"subtype": "lrv", "query": {"color": o.color, "shape": o.shape, "size": wrong},
                            "accepted": []})
    strategy = rng.choice(NEGATIVE_STRATEGIES)
    color, shape = negative_combo(scene, strategy, rng)
    thing = f"{color} {shape}"
    q = template(rng, _LRV_QS, x=thing)
    detail = f"There is no {thing} in this image, so I cannot describe it. {_everything(scene)}"
    return Draft(q, f"There is no {thing}.", detail, label="no", negative_strategy=strategy,
                 extra={"subtype": "lrv", "query": {"color": color, "shape": shape}, "accepted": []})


def existence(scene: Scene, rng: random.Random) -> Draft:
    return pick(rng, [(0.65, _pope), (0.15, _shape_only), (0.2, _lrv)], scene)


# ----- relation -----------------------------------------------------------------------------------------------
_DIRECTION_WORDS = {"left_of": "to the left of", "right_of": "to the right of", "above": "above", "below": "below"}


def _ref_pair(scene: Scene, rng: random.Random, condition) -> tuple[Reference, Reference]:
    """Two objects (described without their positions) that satisfy condition(a, b)."""
    refs = [refer(scene, i, avoid=("position",), rng=rng) for i in range(len(scene.objects))]
    pairs = [(ra, rb) for ra in refs for rb in refs
             if ra and rb and ra.index != rb.index and condition(scene.objects[ra.index], scene.objects[rb.index])]
    if not pairs:
        raise Infeasible("no pair of objects fits")
    return rng.choice(pairs)


def _rel_yesno(scene: Scene, rng: random.Random, axis: str) -> Draft:
    if axis == "col":
        ra, rb = _ref_pair(scene, rng, lambda a, b: a.col != b.col)
        predicate = rng.choice(("left_of", "right_of"))
    else:
        ra, rb = _ref_pair(scene, rng, lambda a, b: a.row != b.row)
        predicate = rng.choice(("above", "below"))
    truth = scene.holds(ra.index, predicate, rb.index)
    words = _DIRECTION_WORDS[predicate]
    q = template(rng, ("Is {a} {w} {b}?", "Is {a} located {w} {b}?", "Would you say {a} is {w} {b}?"),
                 a=ra.phrase, w=words, b=rb.phrase)
    a, b = scene.objects[ra.index], scene.objects[rb.index]
    facts = f"{capitalize(ra.phrase)} is {a.position_prepositional} and {rb.phrase} is {b.position_prepositional}"
    detail = f"{'Yes' if truth else 'No'}. {facts}, so {ra.phrase} is{'' if truth else ' not'} {words} {rb.phrase}."
    label = "yes" if truth else "no"
    return Draft(q, label, detail, label=label,
                 extra={"subtype": f"relation_yesno_{axis}", "subject": ra.index, "object": rb.index,
                        "predicate": predicate, "refs": [ra.attrs, rb.attrs], "accepted": []})


def _rel_yesno_col(scene: Scene, rng: random.Random) -> Draft:
    return _rel_yesno(scene, rng, "col")


def _rel_yesno_row(scene: Scene, rng: random.Random) -> Draft:
    return _rel_yesno(scene, rng, "row")


def _rel_choice(scene: Scene, rng: random.Random) -> Draft:
    if rng.random() < 0.5:
        ra, rb = _ref_pair(scene, rng, lambda a, b: a.col != b.col)
        a, b = scene.objects[ra.index], scene.objects[rb.index]
        answer = "left" if a.col < b.col else "right"
        q = f"Is {ra.phrase} to the left or to the right of {rb.phrase}?"
        detail = f"{capitalize(ra.phrase)} is to the {answer} of {rb.phrase}: it is {a.position_prepositional}, " \
                 f"while {rb.phrase} is {b.position_prepositional}."
        predicate = f"{answer}_of"
    else:
        ra, rb = _ref_pair(scene, rng, lambda a, b: a.row != b.row)
        a, b = scene.objects[ra.index], scene.objects[rb.index]
        answer = "above" if a.row < b.row else "below"
        q = f"Is {ra.phrase} above or below {rb.phrase}?"
        detail = f"{capitalize(ra.phrase)} is {answer} {rb.phrase}: it is {a.position_prepositional}, " \
                 f"while {rb.phrase} is {b.position_prepositional}."
        predicate = answer
    return Draft(q, answer, detail, extra={"subtype": "relation_choice", "subject": ra.index, "object": rb.index,
                                           "predicate": predicate, "refs": [ra.attrs, rb.attrs],
                                           "accepted": [answer]})


def _rel_next_to(scene: Scene, rng: random.Random) -> Draft:
    # Diagonal neighbours are left out: whether they are "next to" each other is a matter of taste.
    ra, rb = _ref_pair(scene, rng, lambda a, b: not (abs(a.row - b.row) == 1 and abs(a.col - b.col) == 1))
    truth = scene.holds(ra.index, "next_to", rb.index)
    a, b = scene.objects[ra.index], scene.objects[rb.index]
    q = template(rng, ("Is {a} next to {b}?", "Is {a} directly beside {b}?", "Are {a} and {b} next to each other?"),
                 a=ra.phrase, b=rb.phrase)
    facts = f"{capitalize(ra.phrase)} is {a.position_prepositional} and {rb.phrase} is {b.position_prepositional}"
    detail = f"{'Yes' if truth else 'No'}. {facts}; " + \
             ("their cells share a side." if truth else "their cells do not share a side.")
    label = "yes" if truth else "no"
    return Draft(q, label, detail, label=label,
                 extra={"subtype": "relation_next_to", "subject": ra.index, "object": rb.index,
                        "predicate": "next_to", "refs": [ra.attrs, rb.attrs], "accepted": []})


_STEPS = {"right": (0, 1), "left": (0, -1), "above": (-1, 0), "below": (1, 0)}


def neighbour_cell(o: SceneObject, direction: str) -> tuple[int, int] | None:
    dr, dc = _STEPS[direction]
    r, c = o.row + dr, o.col + dc
    return (r, c) if 0 <= r < GRID and 0 <= c < GRID else None


def _rel_neighbour(scene: Scene, rng: random.Random) -> Draft:
    options = []
    for i in range(len(scene.objects)):
        # A position-free description is preferred; naming the position is fine here (the answer lies in the
        # neighbouring cell), and it keeps the subtype possible when two objects look the same.
        ref = refer(scene, i, avoid=("position",), rng=rng) or refer(scene, i, rng=rng)
        for direction in _STEPS:
            if neighbour_cell(scene.objects[i], direction) is not None:
                options.append((ref, direction))
    if not options:
        raise Infeasible("no object with a neighbouring cell")
    ref, direction = rng.choice(options)
    r, c = neighbour_cell(scene.objects[ref.index], direction)
    where = {"right": "directly to the right of", "left": "directly to the left of", "above": "directly above",
             "below": "directly below"}[direction]
    q = template(rng, ("What is {w} {r}?", "Which object is {w} {r}?", "What can you see {w} {r}?"),
                 w=where, r=ref.phrase)
    n = scene.at(r, c)
    if n is None:
        short, detail, accepted = "nothing", f"Nothing: the cell {where} {ref.phrase} is empty.", \
            ["nothing", "empty", "none"]
    else:
        short = f"{n.color} {n.shape}"
        detail = f"{capitalize(with_article(n.noun_phrase()))} is {where} {ref.phrase}."
        accepted = [short, n.noun_phrase(), with_article(short), with_article(n.noun_phrase())]
    return Draft(q, short, detail, extra={"subtype": "relation_neighbour", "target": ref.index, "ref": ref.attrs,
                                          "ref_phrase": ref.phrase, "direction": direction, "row": r, "col": c,
                                          "accepted": accepted})


def relation(scene: Scene, rng: random.Random) -> Draft:
    return pick(rng, [(0.3, _rel_yesno_col), (0.2, _rel_yesno_row), (0.2, _rel_choice), (0.1, _rel_next_to),
                      (0.2, _rel_neighbour)], scene)
