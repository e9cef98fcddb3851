"""What every ShapesWorld benchmark edition shares: held-out scene seeds, images, answer requests, metric records.

Scene seeds. Training code draws scenes with `generate_scene(rng)` (seeds below 2**31) or from
`world.datasets.scene_seed(seed, split, index)` (below 2**31 for seed < 107). Every benchmark scene has a seed
at or above `BENCH_SEED_BASE = 2**32`, so no benchmark scene seed is ever a training scene seed:

    bench_scene_seed(edition, seed, index) = 2**32 + code(edition) * 10**9 + seed * 10**6 + index

with 0 <= seed < 1000 and 0 <= index < 10**6. Seeds differ between editions, so editions do not share scenes.
Two different seeds can still draw the same objects in the same cells (a small two-object scene is not rare);
pass `exclude_keys` (a set of `Scene.key()` of the training scenes) to skip those too.
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from mmalign_utils.world.render import render_scene
from mmalign_utils.world.scenes import Scene, generate_scene

BENCH_SEED_BASE = 2**32
MAX_SEED = 1000
MAX_SCENES = 10**6
EDITION_CODES = {
    "shapes-pope": 1, "shapes-mmbench": 2, "shapes-objhal": 3, "shapes-amber": 4, "shapes-llavabench": 5,
    "shapes-mmvet": 6, "shapes-mmhal": 7,
}
IMAGE_SIZE = 96  # ShapesWorld's native size; the processor resizes to what the model needs


def bench_scene_seed(edition: str, seed: int, index: int) -> int:
    """The scene seed of scene `index` of an edition built with `seed` (see the module docstring)."""
    if edition not in EDITION_CODES:
        raise ValueError(f"unknown ShapesWorld edition {edition!r}; choose one of {sorted(EDITION_CODES)}")
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"benchmark seed must be in 0..{MAX_SEED - 1}, got {seed}")
    if not 0 <= index < MAX_SCENES:
        raise ValueError(f"scene index {index} outside 0..{MAX_SCENES - 1}; build fewer items")
    return BENCH_SEED_BASE + EDITION_CODES[edition] * 10**9 + seed * 10**6 + index


def bench_scenes(edition: str, seed: int, exclude_keys: set | None = None) -> Iterator[Scene]:
    """The edition's held-out scenes in order (endless; the caller stops), skipping excluded contents."""
    for index in range(MAX_SCENES):
        scene = generate_scene(bench_scene_seed(edition, seed, index))
        if exclude_keys is not None and scene.key() in exclude_keys:
            continue
        yield scene
    raise ValueError(f"{edition}: ran out of scene indices (more than {MAX_SCENES} scenes requested)")


def item_rng(edition: str, seed: int) -> random.Random:
    """The question-choice RNG of an edition (a string seed: the same on every machine and Python run)."""
    return random.Random(f"{edition}:{seed}")


def scene_image(scene: dict | Scene, image_size: int = IMAGE_SIZE) -> Image.Image:
    """The rendered image of an item's scene (items carry the scene graph, not pixels)."""
    return render_scene(scene if isinstance(scene, Scene) else Scene.from_dict(scene), image_size)


@dataclass
class AnswerRequest:
    """One thing the model must answer, keyed as the official scorer expects its answers.

    `choices` makes it a closed question: the canonical answer texts (("Yes", "No") or ("A", "B", "C", "D")),
    which option scoring compares by the first token; `choice_aliases` adds other spellings a model may start
    with ({"Yes": ("yes",)}), scored as the same choice. `followups` are later user turns (MT-Bench turn 2).
    """

    id: Any
    text: str
    scene: dict | None = None
    choices: tuple[str, ...] | None = None
    choice_aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    followups: tuple[str, ...] = ()
    temperature: float = 0.0
    max_new_tokens: int | None = None  # None: the runner's default for closed or open answers


YES_NO = ("Yes", "No")
YES_NO_ALIASES = {"Yes": ("yes",), "No": ("no",)}


def metric(split: str, name: str, value: float, n: int, item_values: list | None = None, stat: str | None = None,
           scale: float = 1.0) -> dict:
    """One reported number. `item_values` + `stat` (a name in stats.STATS) give a bootstrap CI over items;
    `scale` multiplies the statistic to the reported scale (e.g. 100 for percentages)."""
    value = float(value) if value is not None else math.nan
    return {"split": split, "metric": name, "value": value, "n": int(n), "item_values": item_values,
            "stat": stat if item_values is not None else None, "scale": scale}


def edition_score(edition: str, protocol: str, judge: str, headline: str, metrics: list[dict], official: dict,
                  **extra: Any) -> dict:
    """The score dict every edition returns: its metrics (for results.csv) and the official scorer's full dict."""
    return {"edition": edition, "benchmark": edition, "protocol": protocol, "judge": judge, "headline": headline,
            "metrics": metrics, "official": official, **extra}
