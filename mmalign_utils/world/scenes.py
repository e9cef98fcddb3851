"""Scene graphs of ShapesWorld: objects on a 3x3 grid, their relations and counts, and the scene generator.

A `Scene` is pure data (JSON-safe through `to_dict`/`from_dict`); rendering is in render.py. A scene is fully
determined by its seed: `generate_scene(scene.seed) == scene`.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from mmalign_utils.world import vocab
from mmalign_utils.world.phrasing import capitalize, join_words, number_word, with_article
from mmalign_utils.world.vocab import COLORS, COLS, GRID, ROWS, SHAPES, SIZES

RELATION_PREDICATES = ("left_of", "right_of", "above", "below", "next_to")


class Relation(NamedTuple):
    """`scene.objects[subject]` <predicate> `scene.objects[object]`."""

    subject: int
    predicate: str
    object: int


@dataclass(frozen=True)
class SceneObject:
    """One object. `row`/`col` are grid indices 0..2 (top->bottom, left->right); `dx`/`dy` are the jitter as a
    fraction in [-1, 1] of the free room the object has inside its cell (so it never leaves the cell)."""

    shape: str
    color: str
    size: str
    row: int
    col: int
    dx: float = 0.0
    dy: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if self.shape not in SHAPES:
            problems.append(f"shape {self.shape!r} not in {SHAPES}")
        if self.color not in COLORS:
            problems.append(f"color {self.color!r} not in {COLORS}")
        if self.size not in SIZES:
            problems.append(f"size {self.size!r} not in {SIZES}")
        if not (0 <= self.row < GRID and 0 <= self.col < GRID):
            problems.append(f"cell ({self.row}, {self.col}) outside the {GRID}x{GRID} grid")
        if not (-1.0 <= self.dx <= 1.0 and -1.0 <= self.dy <= 1.0):
            problems.append(f"jitter ({self.dx}, {self.dy}) outside [-1, 1]")
        if problems:
            raise ValueError("bad SceneObject: " + "; ".join(problems))

    @property
    def cell(self) -> int:
        return self.row * GRID + self.col

    @property
    def row_name(self) -> str:
        return ROWS[self.row]

    @property
    def col_name(self) -> str:
        return COLS[self.col]

    @property
    def position(self) -> str:
        """Short position name, e.g. "top left"."""
        return vocab.position_phrase(self.row, self.col)

    @property
    def position_prepositional(self) -> str:
        """e.g. "in the top left corner"."""
        return vocab.position_prepositional(self.row, self.col)

    @property
    def class_index(self) -> int:
        return vocab.class_index(self.color, self.shape, self.size)

    def noun_phrase(self, with_size: bool = True) -> str:
        """"large red circle" (no article)."""
        return " ".join(([self.size] if with_size else []) + [self.color, self.shape])

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "color": self.color, "size": self.size, "row": self.row, "col": self.col,
                "dx": self.dx, "dy": self.dy}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SceneObject:
        return cls(shape=d["shape"], color=d["color"], size=d["size"], row=int(d["row"]), col=int(d["col"]),
                   dx=float(d.get("dx", 0.0)), dy=float(d.get("dy", 0.0)))


def _reading_order(obj: SceneObject) -> int:
    return obj.cell


@dataclass(frozen=True)
class Scene:
    """A scene graph. Objects are kept in reading order (top row first, left to right)."""

    objects: tuple[SceneObject, ...]
    seed: int
    grid: int = GRID
    background: str = "white"
    kind: str = field(default="shapes", init=False)

    def __post_init__(self) -> None:
        objects = tuple(sorted(self.objects, key=_reading_order))
        object.__setattr__(self, "objects", objects)
        if self.grid != GRID:
            raise ValueError(f"only a {GRID}x{GRID} grid is supported, got grid={self.grid}")
        if self.background not in vocab.BACKGROUND_RGB:
            raise ValueError(f"background {self.background!r} not in {vocab.BACKGROUNDS}")
        cells = [o.cell for o in objects]
        if len(cells) != len(set(cells)):
            dup = sorted(c for c, k in Counter(cells).items() if k > 1)
            raise ValueError(f"scene {self.seed}: two objects share cell(s) {dup}; each cell holds at most one")

    # ----- serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"kind": "shapes", "seed": self.seed, "grid": self.grid, "background": self.background,
                "objects": [o.to_dict() for o in self.objects]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scene:
        if d.get("kind", "shapes") != "shapes":
            raise ValueError(f"not a shapes scene (kind={d.get('kind')!r}); use charts.Chart.from_dict")
        return cls(objects=tuple(SceneObject.from_dict(o) for o in d["objects"]), seed=int(d["seed"]),
                   grid=int(d.get("grid", GRID)), background=d.get("background", "white"))

    def key(self) -> tuple:
        """Content identity without seed and jitter: two scenes with the same key show the same objects in the
        same cells (used to keep held-out scenes out of training)."""
        return (self.background,) + tuple((o.row, o.col, o.shape, o.color, o.size) for o in self.objects)

    # ----- queries ---------------------------------------------------------------------------------------
    def at(self, row: int, col: int) -> SceneObject | None:
        for o in self.objects:
            if o.row == row and o.col == col:
                return o
        return None

    def matching(self, shape: str | None = None, color: str | None = None, size: str | None = None,
                 row: int | None = None, col: int | None = None) -> list[int]:
        """Indices of the objects that have every given attribute."""
        return [i for i, o in enumerate(self.objects)
                if (shape is None or o.shape == shape) and (color is None or o.color == color)
                and (size is None or o.size == size) and (row is None or o.row == row)
                and (col is None or o.col == col)]

    def count(self, shape: str | None = None, color: str | None = None, size: str | None = None,
              row: int | None = None, col: int | None = None) -> int:
        return len(self.matching(shape=shape, color=color, size=size, row=row, col=col))

    def has(self, shape: str | None = None, color: str | None = None, size: str | None = None) -> bool:
        return self.count(shape=shape, color=color, size=size) > 0

    def combos(self) -> set[tuple[str, str]]:
        """The (color, shape) combinations present."""
        return {(o.color, o.shape) for o in self.objects}

    def empty_cells(self) -> list[tuple[int, int]]:
        taken = {(o.row, o.col) for o in self.objects}
        return [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in taken]

    def relations(self) -> list[Relation]:
        """All pairwise relations. Definitions (documented in docs/world.md):
        left_of: subject's column < object's column (any rows); right_of: the reverse;
        above: subject's row < object's row (any columns); below: the reverse;
        next_to: the cells share a side (diagonal neighbours are not "next to")."""
        out = []
        for i, a in enumerate(self.objects):
            for j, b in enumerate(self.objects):
                if i == j:
                    continue
                if a.col < b.col:
                    out.append(Relation(i, "left_of", j))
                if a.col > b.col:
                    out.append(Relation(i, "right_of", j))
                if a.row < b.row:
                    out.append(Relation(i, "above", j))
                if a.row > b.row:
                    out.append(Relation(i, "below", j))
                if abs(a.row - b.row) + abs(a.col - b.col) == 1:
                    out.append(Relation(i, "next_to", j))
        return out

    def holds(self, subject: int, predicate: str, obj: int) -> bool:
        return Relation(subject, predicate, obj) in set(self.relations())

    # ----- labels for the vision tower ---------------------------------------------------------------------
    def cell_labels(self) -> list[int]:
        """Joint class per cell in reading order (length 9): 0 = empty, else vocab.class_index(color, shape, size)."""
        labels = [0] * (GRID * GRID)
        for o in self.objects:
            labels[o.cell] = o.class_index
        return labels

    def cell_attributes(self) -> dict[str, list[int]]:
        """Per-cell labels for separate heads: {"color"|"shape"|"size": [9 ints]}, 0 = empty, else 1 + index."""
        out = {name: [0] * (GRID * GRID) for name in ("color", "shape", "size")}
        for o in self.objects:
            out["color"][o.cell] = 1 + COLORS.index(o.color)
            out["shape"][o.cell] = 1 + SHAPES.index(o.shape)
            out["size"][o.cell] = 1 + SIZES.index(o.size)
        return out

    # ----- text ----------------------------------------------------------------------------------------------
    def facts_text(self) -> str:
        """The scene graph as plain text, complete enough for an LLM to write correct answers from it."""
        n = len(self.objects)
        lines = [f"Image: {number_word(n)} objects on a {GRID}x{GRID} grid with a {self.background} background "
                 f"(flat 2D shapes; each cell holds at most one object)."]
        lines.append("Objects, in reading order (top row first, left to right):")
        for k, o in enumerate(self.objects, 1):
            lines.append(f"{k}. {with_article(o.noun_phrase())} {o.position_prepositional} "
                         f"(row {o.row + 1} of 3, column {o.col + 1} of 3)")
        empty = [vocab.position_phrase(r, c) for r, c in self.empty_cells()]
        lines.append("Empty cells: " + (join_words(empty) if empty else "none") + ".")
        shape_counts = [f"{vocab.plural(s)} {self.count(shape=s)}" for s in SHAPES]
        color_counts = [f"{c} {self.count(color=c)}" for c in COLORS]
        size_counts = [f"{s} {self.count(size=s)}" for s in SIZES]
        lines.append(f"Counts: {n} objects in total. Per shape: " + ", ".join(shape_counts) + ".")
        lines.append("Objects per color: " + ", ".join(color_counts) + ". Per size: " + ", ".join(size_counts) + ".")
        absent = [s for s in SHAPES if not self.has(shape=s)]
        if absent:
            lines.append("Not in the image: any " + join_words([vocab.plural(s) for s in absent], "or") + ".")
        adjacent = self.adjacency_sentences()
        if adjacent:
            lines.append("Neighbours (cells sharing a side): " + "; ".join(adjacent) + ".")
        return "\n".join(lines)

    def adjacency_sentences(self) -> list[str]:
        """One clause per pair of objects in cells that share a side."""
        out = []
        for rel in self.relations():
            if rel.predicate != "next_to" or rel.subject > rel.object:
                continue
            a, b = self.objects[rel.subject], self.objects[rel.object]
            if a.row == b.row:
                left, right = (a, b) if a.col < b.col else (b, a)
                out.append(f"the {left.noun_phrase()} {left.position_prepositional} is directly left of the "
                           f"{right.noun_phrase()} {right.position_prepositional}")
            else:
                top, bottom = (a, b) if a.row < b.row else (b, a)
                out.append(f"the {top.noun_phrase()} {top.position_prepositional} is directly above the "
                           f"{bottom.noun_phrase()} {bottom.position_prepositional}")
        return out

    def summary(self) -> str:
        """One line: "Three shapes: a large red circle, a small blue square and a large yellow star." """
        items = [with_article(o.noun_phrase()) for o in self.objects]
        return capitalize(f"{number_word(len(items))} shapes: {join_words(items)}.")


# ----- generation --------------------------------------------------------------------------------------------
def seed_from(rng_or_seed: int | random.Random | np.random.Generator) -> int:
    """An int seed from an int, a random.Random or a numpy Generator (drawing one number from the latter two)."""
    if isinstance(rng_or_seed, bool):
        raise TypeError("a seed must be an int, random.Random or numpy Generator, not bool")
    if isinstance(rng_or_seed, (int, np.integer)):
        return int(rng_or_seed)
    if isinstance(rng_or_seed, random.Random):
        return rng_or_seed.getrandbits(31)
    if isinstance(rng_or_seed, np.random.Generator):
        return int(rng_or_seed.integers(0, 2**31))
    raise TypeError(f"expected an int seed, random.Random or numpy Generator, got {type(rng_or_seed).__name__}")


_COMBOS = list(vocab.COMBO_WEIGHTS)
_COMBO_WEIGHTS = [vocab.COMBO_WEIGHTS[c] for c in _COMBOS]


def generate_scene(rng_or_seed: int | random.Random | np.random.Generator,
                   n_objects: tuple[int, int] = (2, 5)) -> Scene:
    """A random scene with between n_objects[0] and n_objects[1] objects (inclusive) in distinct cells.

    Colour-shape combinations follow `vocab.COMBO_WEIGHTS`; size, cells and background are uniform. Given a
    Random or Generator, one seed is drawn from it and the scene is built from that seed alone, so
    `generate_scene(scene.seed, n_objects)` rebuilds it.
    """
    lo, hi = n_objects
    if not 1 <= lo <= hi <= GRID * GRID:
        raise ValueError(f"n_objects must satisfy 1 <= min <= max <= {GRID * GRID}, got {n_objects}")
    seed = seed_from(rng_or_seed)
    rng = random.Random(seed)
    n = rng.randint(lo, hi)
    cells = rng.sample(range(GRID * GRID), n)
    objects = []
    for cell in cells:
        color, shape = rng.choices(_COMBOS, weights=_COMBO_WEIGHTS)[0]
        size = rng.choice(SIZES)
        dx, dy = round(rng.uniform(-1, 1), 3), round(rng.uniform(-1, 1), 3)
        objects.append(SceneObject(shape, color, size, cell // GRID, cell % GRID, dx, dy))
    background = rng.choice(vocab.BACKGROUNDS)
    return Scene(objects=tuple(objects), seed=seed, background=background)
