"""multiple_choice: MMBench-like questions with four options, exactly one correct.

`question` holds the stem followed by the lettered options (one per line, "A. red"), as in LLaVA's MMBench
prompts; the instruction suffix (`MC_SUFFIX`) is left to the caller. `options`, `answer_letter` and
extra["stem"] let a benchmark edition rotate the options (CircularEval).
"""
from __future__ import annotations

import random

from mmalign_utils.world import vocab
from mmalign_utils.world.drafts import Draft, Infeasible, pick, template
from mmalign_utils.world.phrasing import capitalize
from mmalign_utils.world.qa_basic import pick_reference, reference_extra, a_object, negative_combo
from mmalign_utils.world.scenes import Scene
from mmalign_utils.world.vocab import COLORS, SHAPES, plural

LETTERS = ("A", "B", "C", "D")


def format_options(stem: str, options: list[str]) -> str:
    """"stem\\nA. opt1\\nB. opt2\\n..." """
    return stem + "".join(f"\n{letter}. {opt}" for letter, opt in zip(LETTERS, options))


def _finish(stem: str, correct: str, distractors: list[str], explanation: str, rng: random.Random,
            extra: dict) -> Draft:
    if len(distractors) != 3 or correct in distractors or len(set(distractors)) != 3:
        raise ValueError(f"multiple choice needs 3 distinct wrong options besides {correct!r}, got {distractors}")
    options = [correct] + distractors
    rng.shuffle(options)
    letter = LETTERS[options.index(correct)]
    detail = f"The answer is {letter}. {explanation}"
    return Draft(format_options(stem, options), letter, detail, options=options, answer_letter=letter,
                 extra={**extra, "stem": stem, "correct_option": correct, "accepted": [letter]})


def _mc_color(scene: Scene, rng: random.Random) -> Draft:
    ref = pick_reference(scene, rng, ("color",))
    o = scene.objects[ref.index]
    wrong = rng.sample([c for c in COLORS if c != o.color], 3)
    stem = template(rng, ("What color is {r}?", "Which color does {r} have?"), r=ref.phrase)
    return _finish(stem, o.color, wrong, f"{capitalize(ref.phrase)} is {o.color}.", rng,
                   {"subtype": "mc_color", **reference_extra(ref)})


def _mc_shape(scene: Scene, rng: random.Random) -> Draft:
    ref = pick_reference(scene, rng, ("shape",))
    o = scene.objects[ref.index]
    wrong = [s for s in SHAPES if s != o.shape]
    stem = template(rng, ("What shape is {r}?", "Which shape is {r}?"), r=ref.phrase)
    return _finish(stem, o.shape, wrong, f"{capitalize(ref.phrase)} is {a_object(o)}.", rng,
                   {"subtype": "mc_shape", **reference_extra(ref)})


def _mc_position(scene: Scene, rng: random.Random) -> Draft:
    ref = pick_reference(scene, rng, ("position",))
    o = scene.objects[ref.index]
    # Cells of other objects make the best distractors: they are places where something is.
    others = [p.position for p in scene.objects if p is not o]
    rest = [p for p in vocab.ALL_POSITION_PHRASES if p != o.position and p not in others]
    rng.shuffle(others)
    rng.shuffle(rest)
    wrong = (others + rest)[:3]
    stem = template(rng, ("Where is {r}?", "In which part of the image is {r}?"), r=ref.phrase)
    return _finish(stem, o.position, wrong, f"{capitalize(ref.phrase)} is {o.position_prepositional}.", rng,
                   {"subtype": "mc_position", **reference_extra(ref)})


def _mc_count(scene: Scene, rng: random.Random) -> Draft:
    shape = rng.choice(SHAPES)
    n = scene.count(shape=shape)
    wrong = rng.sample([str(k) for k in range(max(0, n - 3), n + 4) if k != n], 3)
    stem = f"How many {plural(shape)} are in the image?"
    return _finish(stem, str(n), wrong, f"There {'is' if n == 1 else 'are'} {n} {shape if n == 1 else plural(shape)}.",
                   rng, {"subtype": "mc_count", "filters": {"shape": shape}})


def _mc_presence(scene: Scene, rng: random.Random) -> Draft:
    color, shape = rng.choice(sorted(scene.combos()))
    wrong: list[str] = []
    for strategy in ("adversarial", "adversarial", "popular", "random", "random", "random", "random", "random"):
        c, s = negative_combo(scene, strategy, rng)
        if f"{c} {s}" not in wrong:
            wrong.append(f"{c} {s}")
        if len(wrong) == 3:
            break
    if len(wrong) < 3:
        raise Infeasible("not enough distinct absent objects")
    stem = template(rng, ("Which of the following objects appears in the image?",
                          "Which of these objects can be seen in the picture?"))
    return _finish(stem, f"{color} {shape}", wrong, f"The image contains a {color} {shape}; the other options are "
                   f"not in the image.", rng, {"subtype": "mc_presence"})


def _mc_absence(scene: Scene, rng: random.Random) -> Draft:
    present = sorted(scene.combos())
    if len(present) < 3:
        raise Infeasible("fewer than three different objects")
    wrong = [f"{c} {s}" for c, s in rng.sample(present, 3)]
    c, s = negative_combo(scene, rng.choice(("adversarial", "popular", "random")), rng)
    stem = "Which of the following objects is NOT in the image?"
    return _finish(stem, f"{c} {s}", wrong, f"There is no {c} {s} in the image; the other three are present.", rng,
                   {"subtype": "mc_absence"})


def multiple_choice(scene: Scene, rng: random.Random) -> Draft:
    return pick(rng, [(0.25, _mc_color), (0.15, _mc_shape), (0.2, _mc_position), (0.15, _mc_count),
                      (0.15, _mc_presence), (0.1, _mc_absence)], scene)
