"""Referring expressions: the shortest natural description that picks out exactly one object of a scene.

Questions must name their target unambiguously ("the red circle" when there are two circles) and must not give
away what they ask ("What color is the red circle?"), so every description is built here, avoiding the attribute
the question asks about.
"""
from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from mmalign_utils.world.scenes import Scene

# Tried in this order; the first that is unique is the default (shortest) description.
_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("shape",), ("color", "shape"), ("size", "shape"), ("size", "color", "shape"),
    ("color",), ("size", "color"), ("shape", "position"), ("position",),
)


@dataclass(frozen=True)
class Reference:
    index: int  # into scene.objects
    phrase: str  # "the large red circle", "the object in the top left corner"
    attrs: dict  # the attributes the phrase uses: subset of shape/color/size/row/col

    @property
    def bare(self) -> str:
        """The phrase without its article: "large red circle"."""
        return self.phrase[4:] if self.phrase.startswith("the ") else self.phrase


def _attrs_of(scene: Scene, index: int, keys: tuple[str, ...]) -> dict:
    o = scene.objects[index]
    out: dict = {}
    for k in keys:
        if k == "position":
            out["row"], out["col"] = o.row, o.col
        else:
            out[k] = getattr(o, k)
    return out


def _phrase(scene: Scene, index: int, keys: tuple[str, ...], generic_noun: str) -> str:
    o = scene.objects[index]
    words = ["the"]
    if "size" in keys:
        words.append(o.size)
    if "color" in keys:
        words.append(o.color)
    words.append(o.shape if "shape" in keys else generic_noun)
    if "position" in keys:
        words.append(o.position_prepositional)
    return " ".join(words)


def refer(scene: Scene, index: int, avoid: Iterable[str] = (), rng: random.Random | None = None) -> Reference | None:
    """A unique description of scene.objects[index] that does not use the attributes in `avoid`
    ("shape", "color", "size", "position"). None if no such description exists (e.g. two identical objects and
    position avoided). With an rng, sometimes a longer unique description is chosen, for variety."""
    avoid = set(avoid)
    unknown = avoid - {"shape", "color", "size", "position"}
    if unknown:
        raise ValueError(f"cannot avoid unknown attributes {sorted(unknown)}")
    unique = []
    for keys in _CANDIDATES:
        if avoid & set(keys):
            continue
        if "shape" not in keys and "shape" not in avoid:
            continue  # name the shape whenever the question allows it: "the red circle", not "the red object"
        attrs = _attrs_of(scene, index, keys)
        if scene.matching(**attrs) == [index]:
            unique.append(keys)
    if not unique:
        return None
    keys = unique[0] if rng is None or rng.random() < 0.6 else rng.choice(unique)
    generic = "object" if rng is None else rng.choice(("object", "shape"))
    return Reference(index=index, phrase=_phrase(scene, index, keys, generic), attrs=_attrs_of(scene, index, keys))
