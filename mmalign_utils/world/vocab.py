"""The closed vocabulary of ShapesWorld: colours, shapes, sizes, grid positions, their words and the class prior.

Everything that names a thing in the world lives here, so that the scene generator, the renderer, the question
templates and the grounding checker can never disagree about a word.
"""
from __future__ import annotations

COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
SIZES: tuple[str, ...] = ("small", "large")
ROWS: tuple[str, ...] = ("top", "middle", "bottom")
COLS: tuple[str, ...] = ("left", "center", "right")
GRID = 3  # the world is a 3x3 grid; one cell = one 32 px vision patch at the default 96 px

# Saturated colours far apart in RGB (the closest pair, red/orange, differ by about 90 in the green channel), so
# that a small vision tower separates them at 96 px even after antialiasing blends edges with the background.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 90, 230),
    "yellow": (245, 210, 0),
    "purple": (140, 50, 190),
    "orange": (250, 125, 0),
}

# Pale backgrounds only, so no background can be mistaken for an object colour.
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "light gray": (225, 225, 225),
    "cream": (250, 245, 228),
}
BACKGROUNDS: tuple[str, ...] = tuple(BACKGROUND_RGB)

# Object radius as a fraction of the cell side (the shape's bounding circle). At 96 px (32 px cells) a large
# object spans about 24 px and a small one about 14 px: clearly different, both clearly visible.
SIZE_RADIUS_FRACTION: dict[str, float] = {"small": 0.22, "large": 0.38}

# ----- class prior -------------------------------------------------------------------------------------------
# Non-uniform on purpose: POPE's "popular" negatives ask about objects that are frequent in the data but absent
# from the image, which needs frequent classes to exist. Weights are relative; see docs/world.md for the table.
_FAVOURITE = 4.0  # red circle, blue square, yellow star, green triangle
_COMMON = 2.0  # blue circle, red square, purple star, orange triangle
_RARE = 1.0  # the other 16 colour-shape combinations
COMBO_WEIGHTS: dict[tuple[str, str], float] = {(c, s): _RARE for c in COLORS for s in SHAPES}
for _combo in (("red", "circle"), ("blue", "square"), ("yellow", "star"), ("green", "triangle")):
    COMBO_WEIGHTS[_combo] = _FAVOURITE
for _combo in (("blue", "circle"), ("red", "square"), ("purple", "star"), ("orange", "triangle")):
    COMBO_WEIGHTS[_combo] = _COMMON


def combo_probability(color: str, shape: str) -> float:
    """Prior probability that a generated object is this colour-shape combination."""
    return COMBO_WEIGHTS[(color, shape)] / sum(COMBO_WEIGHTS.values())


# ----- class indices for pretraining the vision tower ---------------------------------------------------------
NUM_CLASSES = 1 + len(COLORS) * len(SHAPES) * len(SIZES)  # 0 = empty cell


def class_index(color: str, shape: str, size: str) -> int:
    """Joint class of one object (1..48); 0 is reserved for an empty cell."""
    return 1 + (COLORS.index(color) * len(SHAPES) + SHAPES.index(shape)) * len(SIZES) + SIZES.index(size)


def class_from_index(index: int) -> tuple[str, str, str] | None:
    """(color, shape, size) of a class index, or None for 0 (empty)."""
    if index == 0:
        return None
    if not 1 <= index < NUM_CLASSES:
        raise ValueError(f"class index {index} out of range 0..{NUM_CLASSES - 1}")
    rest, size_i = divmod(index - 1, len(SIZES))
    color_i, shape_i = divmod(rest, len(SHAPES))
    return COLORS[color_i], SHAPES[shape_i], SIZES[size_i]


# ----- positions ---------------------------------------------------------------------------------------------
# Short names (used as short answers) and prepositional phrases (used in sentences). Edge-middle cells get two
# words ("top center", not "top") so that "at the top" can never be read as "somewhere in the top row".
_POSITION_SHORT: dict[tuple[int, int], str] = {
    (0, 0): "top left", (0, 1): "top center", (0, 2): "top right",
    (1, 0): "middle left", (1, 1): "center", (1, 2): "middle right",
    (2, 0): "bottom left", (2, 1): "bottom center", (2, 2): "bottom right",
}
_POSITION_PREP: dict[tuple[int, int], str] = {
    (0, 0): "in the top left corner", (0, 1): "at the top center", (0, 2): "in the top right corner",
    (1, 0): "on the middle left", (1, 1): "in the center", (1, 2): "on the middle right",
    (2, 0): "in the bottom left corner", (2, 1): "at the bottom center", (2, 2): "in the bottom right corner",
}


def _cell(row: int | str, col: int | str) -> tuple[int, int]:
    r = ROWS.index(row) if isinstance(row, str) else int(row)
    c = COLS.index(col) if isinstance(col, str) else int(col)
    if not (0 <= r < GRID and 0 <= c < GRID):
        raise ValueError(f"cell ({row}, {col}) is outside the {GRID}x{GRID} grid")
    return r, c


def position_phrase(row: int | str, col: int | str) -> str:
    """Short name of a cell: "top left", "top center", ..., "center", ..., "bottom right"."""
    return _POSITION_SHORT[_cell(row, col)]


def position_prepositional(row: int | str, col: int | str) -> str:
    """The cell as a sentence phrase: "in the top left corner", "at the top center", "in the center", ..."""
    return _POSITION_PREP[_cell(row, col)]


ALL_POSITION_PHRASES: tuple[str, ...] = tuple(_POSITION_SHORT[(r, c)] for r in range(GRID) for c in range(GRID))

# ----- words the grounding checker recognises ----------------------------------------------------------------
# word -> (canonical shape, is_plural). "rectangle"/"box"/"block" count as squares: a square is a rectangle and
# calling it one is not a hallucination. Words for shapes that never occur in the world are listed apart: a
# text naming one (with an article, number or colour in front) is talking about an object that is not there.
SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "dot", "disc", "disk", "sphere"),
    "square": ("square", "box", "block", "rectangle", "quadrilateral"),
    "triangle": ("triangle",),
    "star": ("star",),
}
OUT_OF_WORLD_SHAPES: tuple[str, ...] = (
    "diamond", "hexagon", "pentagon", "octagon", "heart", "oval", "ellipse", "crescent", "cross", "rhombus",
    "trapezoid", "cylinder", "cube", "pyramid", "arrow", "ring", "cone", "polygon", "parallelogram", "moon",
)
# "thing"/"element" are left out: "two things stand out" is not a count of objects.
GENERIC_OBJECT_NOUNS: tuple[str, ...] = ("object", "shape", "item", "figure")

_IRREGULAR_PLURALS = {"box": "boxes", "sphere": "spheres", "ellipse": "ellipses", "cross": "crosses"}


def plural(noun: str) -> str:
    """English plural of a vocabulary noun."""
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def _noun_table() -> dict[str, tuple[str, bool]]:
    table: dict[str, tuple[str, bool]] = {}
    for canonical, words in SHAPE_SYNONYMS.items():
        for word in words:
            table[word] = (canonical, False)
            table[plural(word)] = (canonical, True)
    for word in OUT_OF_WORLD_SHAPES:
        table[word] = (word, False)
        table[plural(word)] = (word, True)
    return table


SHAPE_WORDS: dict[str, tuple[str, bool]] = _noun_table()
GENERIC_WORDS: dict[str, bool] = {**{n: False for n in GENERIC_OBJECT_NOUNS},
                                  **{plural(n): True for n in GENERIC_OBJECT_NOUNS}}

COLOR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "green": ("green",),
    "blue": ("blue",),
    "yellow": ("yellow", "golden"),
    "purple": ("purple", "violet"),
    "orange": ("orange",),
}
# Colours a text may name that the world never uses (a "pink circle" is a wrong colour, not an unknown word).
OTHER_COLOR_WORDS: tuple[str, ...] = ("pink", "brown", "black", "white", "gray", "grey", "cyan", "magenta", "teal",
                                      "turquoise")
COLOR_WORDS: dict[str, str] = {w: c for c, words in COLOR_SYNONYMS.items() for w in words}
COLOR_WORDS.update({w: ("gray" if w == "grey" else w) for w in OTHER_COLOR_WORDS})

SIZE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny", "smallish", "mini"),
    "large": ("large", "big", "huge", "giant"),
}
SIZE_WORDS: dict[str, str] = {w: s for s, words in SIZE_SYNONYMS.items() for w in words}

# All word lists of the grounding checker in one place: {"shape"|"color"|"size": {canonical: words}}.
SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {"shape": SHAPE_SYNONYMS, "color": COLOR_SYNONYMS,
                                                   "size": SIZE_SYNONYMS}
