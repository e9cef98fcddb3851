"""Long-form families about shapes scenes: describe (LLaVA detail-style), reasoning (multi-step), conversation.

The detailed answers here are templated; the lead's pipeline writes natural LLM versions from `facts_text()`.
"""
from __future__ import annotations

import random

from mmalign_utils.world import qa_basic
from mmalign_utils.world.drafts import Draft, Infeasible, pick, template
from mmalign_utils.world.phrasing import capitalize, count_phrase, join_words, number_word, with_article
from mmalign_utils.world.qa_basic import a_object, list_objects
from mmalign_utils.world.refer import refer
from mmalign_utils.world.scenes import Scene
from mmalign_utils.world.vocab import GRID, ROWS, SHAPES, plural

# ----- describe -----------------------------------------------------------------------------------------------
DESCRIBE_QUESTIONS = (
    "Describe this image in detail.", "What do you see in this image?", "Give a detailed description of the picture.",
    "Can you describe what is shown in the image?", "Explain the visual content of the image in detail.",
    "Write a detailed description of the given image.", "What objects are in this picture, and where are they?",
)


def describe_text(scene: Scene, rng: random.Random) -> str:
    """A templated multi-sentence description: overview, each object with its position, counts, a relation."""
    n = len(scene.objects)
    intro = template(rng, (
        "The image shows {n} flat shapes on a {bg} background.",
        "This picture contains {n} colored shapes arranged on a three-by-three grid with a {bg} background.",
        "There are {n} objects in this image, drawn on a plain {bg} background.",
    ), n=number_word(n), bg=scene.background)
    sentences = [intro]
    for o in scene.objects:
        sentences.append(template(rng, (
            "{Where}, there is {a}.", "{A} sits {where}.", "{Where} we can see {a}.", "{A} is placed {where}.",
        ), Where=capitalize(o.position_prepositional), where=o.position_prepositional,
            a=with_article(o.noun_phrase()), A=capitalize(with_article(o.noun_phrase()))))
    present_shapes = [count_phrase(scene.count(shape=s), s) for s in SHAPES if scene.has(shape=s)]
    absent_shapes = [plural(s) for s in SHAPES if not scene.has(shape=s)]
    first_count = scene.count(shape=next(s for s in SHAPES if scene.has(shape=s)))
    tally = f"Altogether there {'is' if first_count == 1 else 'are'} {join_words(present_shapes)}"
    tally += f", and no {join_words(absent_shapes, 'or')}." if absent_shapes else "."
    sentences.append(tally)
    adjacent = scene.adjacency_sentences()
    if adjacent:
        sentences.append(capitalize(rng.choice(adjacent)) + ".")
    empty = scene.empty_cells()
    if (1, 1) in empty:
        sentences.append("The center of the image is empty.")
    return " ".join(sentences)


def describe(scene: Scene, rng: random.Random) -> Draft:
    q = rng.choice(DESCRIBE_QUESTIONS)
    return Draft(q, scene.summary(), describe_text(scene, rng), extra={"subtype": "describe", "accepted": []})


# ----- reasoning ----------------------------------------------------------------------------------------------
def _more_than(scene: Scene, rng: random.Random) -> Draft:
    s1, s2 = rng.sample(SHAPES, 2)
    n1, n2 = scene.count(shape=s1), scene.count(shape=s2)
    if n1 + n2 == 0:
        raise Infeasible("neither shape is present")
    truth = n1 > n2
    q = template(rng, ("Are there more {a} than {b}?", "Does the image have more {a} than {b}?",
                       "Are {a} more numerous than {b} here?"), a=plural(s1), b=plural(s2))
    relation = "more" if n1 > n2 else ("fewer" if n1 < n2 else "the same number of")
    detail = (f"{'Yes' if truth else 'No'}. There {'is' if n1 == 1 else 'are'} {count_phrase(n1, s1)} and "
              f"{count_phrase(n2, s2)}, so there are {relation} {plural(s1)} {'as' if n1 == n2 else 'than'} "
              f"{plural(s2)}.")
    label = "yes" if truth else "no"
    return Draft(q, label, detail, label=label, extra={"subtype": "more_than", "shapes": [s1, s2], "accepted": []})


def _which_more(scene: Scene, rng: random.Random) -> Draft:
    s1, s2 = rng.sample(SHAPES, 2)
    n1, n2 = scene.count(shape=s1), scene.count(shape=s2)
    if n1 == n2:
        raise Infeasible("equal counts")
    winner = s1 if n1 > n2 else s2
    q = f"Which are there more of in the image, {plural(s1)} or {plural(s2)}?"
    detail = f"There are more {plural(winner)}: the image has {count_phrase(n1, s1)} and {count_phrase(n2, s2)}."
    return Draft(q, plural(winner), detail, extra={"subtype": "which_more", "shapes": [s1, s2],
                                                   "accepted": [plural(winner), winner]})


def _compare_size(scene: Scene, rng: random.Random) -> Draft:
    refs = [refer(scene, i, avoid=("size",), rng=rng) for i in range(len(scene.objects))]
    pairs = [(a, b) for a in refs for b in refs if a and b and a.index < b.index
             and scene.objects[a.index].size != scene.objects[b.index].size]
    if not pairs:
        raise Infeasible("no two describable objects of different sizes")
    ra, rb = rng.sample(rng.choice(pairs), 2)
    ask_larger = rng.random() < 0.6
    a, b = scene.objects[ra.index], scene.objects[rb.index]
    winner = ra if (a.size == "large") == ask_larger else rb
    word = "larger" if ask_larger else "smaller"
    q = template(rng, ("Which is {w}, {a} or {b}?", "Which object is {w}: {a} or {b}?",
                       "Between {a} and {b}, which one is {w}?"), w=word, a=ra.phrase, b=rb.phrase)
    detail = f"{capitalize(ra.phrase)} is {a.size} and {rb.phrase} is {b.size}, so {winner.phrase} is {word}."
    return Draft(q, winner.bare, detail, extra={"subtype": "compare_size", "target": winner.index,
                                                "ref": winner.attrs, "ref_phrase": winner.phrase,
                                                "refs": [ra.attrs, rb.attrs], "ask": word,
                                                "accepted": [winner.bare, winner.phrase]})


def _not_color(scene: Scene, rng: random.Random) -> Draft:
    color = rng.choice(scene.objects).color
    n, k = len(scene.objects), scene.count(color=color)
    q = template(rng, ("How many objects are not {c}?", "How many shapes in the image are not {c}?",
                       "Excluding the {c} ones, how many objects are there?"), c=color)
    detail = f"There are {number_word(n)} objects and {number_word(k)} of them {'is' if k == 1 else 'are'} {color}, " \
             f"so {number_word(n - k)} {'is' if n - k == 1 else 'are'} not {color}."
    return Draft(q, str(n - k), detail, extra={"subtype": "not_color", "color": color,
                                               "accepted": [str(n - k), number_word(n - k)]})


def _line_count(scene: Scene, rng: random.Random) -> Draft:
    axis = rng.choice(("row", "col"))
    k = rng.randrange(GRID)
    name = f"{ROWS[k]} row" if axis == "row" else f"{('left', 'middle', 'right')[k]} column"
    idx = scene.matching(**{axis: k})
    q = template(rng, ("How many objects are in the {l}?", "How many shapes does the {l} contain?",
                       "Count the objects in the {l}."), l=name)
    if idx:
        detail = f"The {name} contains {count_phrase(len(idx), 'object')}: {list_objects(scene, idx)}."
    else:
        detail = f"The {name} is empty, so the answer is zero."
    return Draft(q, str(len(idx)), detail, extra={"subtype": "line_count", "filters": {axis: k},
                                                  "accepted": [str(len(idx)), number_word(len(idx))]})


def _same_color(scene: Scene, rng: random.Random) -> Draft:
    shapes = [s for s in SHAPES if scene.count(shape=s) >= 2]
    if not shapes:
        raise Infeasible("no shape appears twice")
    shape = rng.choice(shapes)
    idx = scene.matching(shape=shape)
    colors = [scene.objects[i].color for i in idx]
    truth = len(set(colors)) == 1
    q = template(rng, ("Do all the {p} have the same color?", "Are all of the {p} the same color?"), p=plural(shape))
    detail = f"{'Yes' if truth else 'No'}. The {plural(shape)} are: {list_objects(scene, idx)}" + \
             (f"; all of them are {colors[0]}." if truth else "; their colors differ.")
    label = "yes" if truth else "no"
    return Draft(q, label, detail, label=label, extra={"subtype": "same_color", "shape": shape, "accepted": []})


def _neighbour_color(scene: Scene, rng: random.Random) -> Draft:
    options = []
    for i, o in enumerate(scene.objects):
        ref = refer(scene, i, avoid=("position",), rng=rng)
        for direction in ("right", "left", "above", "below"):
            cell = qa_basic.neighbour_cell(o, direction)
            if ref is not None and cell is not None and scene.at(*cell) is not None:
                options.append((ref, direction, cell))
    if not options:
        raise Infeasible("no two objects in neighbouring cells")
    ref, direction, (r, c) = rng.choice(options)
    n = scene.at(r, c)
    where = {"right": "directly to the right of", "left": "directly to the left of", "above": "directly above",
             "below": "directly below"}[direction]
    q = f"What color is the object {where} {ref.phrase}?"
    detail = f"{capitalize(ref.phrase)} is {scene.objects[ref.index].position_prepositional}. The object {where} it " \
             f"is {with_article(n.noun_phrase())}, so its color is {n.color}."
    return Draft(q, n.color, detail, extra={"subtype": "neighbour_color", "target": ref.index, "ref": ref.attrs,
                                            "ref_phrase": ref.phrase, "direction": direction, "row": r, "col": c,
                                            "accepted": [n.color]})


def _after_removal(scene: Scene, rng: random.Random) -> Draft:
    shape = rng.choice(scene.objects).shape
    n, k = len(scene.objects), scene.count(shape=shape)
    q = f"If all the {plural(shape)} were removed, how many objects would be left?"
    detail = f"There are {number_word(n)} objects, {count_phrase(k, shape)} among them. Removing " \
             f"{'it' if k == 1 else 'them'} leaves {number_word(n - k)}."
    return Draft(q, str(n - k), detail, extra={"subtype": "after_removal", "shape": shape,
                                               "accepted": [str(n - k), number_word(n - k)]})


def reasoning(scene: Scene, rng: random.Random) -> Draft:
    return pick(rng, [(0.15, _more_than), (0.1, _which_more), (0.2, _compare_size), (0.1, _not_color),
                      (0.15, _line_count), (0.1, _same_color), (0.1, _neighbour_color), (0.1, _after_removal)], scene)


# ----- conversation -------------------------------------------------------------------------------------------
def _follow_up(scene: Scene, rng: random.Random) -> list[Draft]:
    """Ask about a shape, then about "it": colour, then size or position."""
    singles = [o for o in scene.objects if scene.count(shape=o.shape) == 1]
    if not singles:
        raise Infeasible("no shape appears exactly once")
    o = rng.choice(singles)
    i = scene.objects.index(o)
    ref = {"shape": o.shape}
    first = Draft(f"Is there {with_article(o.shape)} in the image?", "yes",
                  f"Yes, there is {a_object(o)}.", label="yes",
                  extra={"subtype": "shape_only", "query": {"shape": o.shape}, "accepted": []})
    second = Draft(rng.choice(("What color is it?", "Which color does it have?")), o.color,
                   f"It is {o.color}.", extra={"subtype": "color", "target": i, "ref": ref, "ref_phrase": "it",
                                               "accepted": [o.color]})
    if rng.random() < 0.5:
        third = Draft(rng.choice(("Is it large or small?", "How big is it?")), o.size, f"It is {o.size}.",
                      extra={"subtype": "size", "target": i, "ref": ref, "ref_phrase": "it", "accepted": [o.size]})
    else:
        third = Draft(rng.choice(("Where exactly is it?", "Where is it located?")), o.position,
                      f"It is {o.position_prepositional} of the image.",
                      extra={"subtype": "where", "target": i, "ref": ref, "ref_phrase": "it",
                             "accepted": [o.position]})
    return [first, second, third][: rng.choice((2, 3))]


def _mixed(scene: Scene, rng: random.Random) -> list[Draft]:
    opener = Draft(rng.choice(("What is in this image?", "What do you see in this picture?",
                               "Can you tell me what this image shows?")), scene.summary(), scene.summary(),
                   extra={"subtype": "summary", "accepted": []})
    families = [qa_basic.short_vqa, qa_basic.count, qa_basic.existence, qa_basic.relation]
    turns = [opener] if rng.random() < 0.6 else []
    target = rng.choice((2, 3))
    seen = set()
    while len(turns) < target:
        d = rng.choice(families)(scene, rng)
        if d.question not in seen:
            seen.add(d.question)
            turns.append(d)
    return turns


def conversation(scene: Scene, rng: random.Random) -> Draft:
    if rng.random() < 0.35:
        try:
            return conversation_from_turns(_follow_up(scene, rng))
        except Infeasible:
            pass
    return conversation_from_turns(_mixed(scene, rng))


def conversation_from_turns(drafts: list[Draft]) -> Draft:
    """Turn drafts into one conversation draft: `turns` holds (question, detailed answer) per turn; the item's
    question/short/detailed answer are those of the first turn; each turn's checks sit in extra["turn_extras"]."""
    first = drafts[0]
    return Draft(first.question, first.short_answer, first.detailed_answer, label=first.label,
                 negative_strategy=first.negative_strategy,
                 turns=[(d.question, d.detailed_answer) for d in drafts],
                 extra={"subtype": "conversation", "turn_short_answers": [d.short_answer for d in drafts],
                        "turn_labels": [d.label for d in drafts],
                        "turn_negative_strategies": [d.negative_strategy for d in drafts],
                        "turn_extras": [d.extra for d in drafts],
                        "accepted": []})

