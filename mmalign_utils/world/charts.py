"""Charts: the SciGraphQA analog of ShapesWorld.

Small bar charts (3-5 coloured bars) and line charts (1-2 coloured lines of 4-6 points) on a 0-10 scale, drawn
without any text: at 96 px a model cannot read labels, so questions give the title (and, where needed, which
colour stands for which label) as context, and ask what the pixels show: tallest/shortest bar, number of bars
or points, trend, which of two is higher.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mmalign_utils.world import vocab
from mmalign_utils.world.phrasing import capitalize, join_words, number_word, ordinal
from mmalign_utils.world.scenes import seed_from

Y_MAX = 10  # values are integers in 1..Y_MAX; gridlines every 2 units make differences of 1 visible
CHART_KINDS = ("bar", "line")

# (title, what one bar/line stands for, labels). Titles are neutral about direction so that the title alone
# never gives away a trend or a winner.
BAR_TOPICS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Fruit sold at a market stall", "fruit", ("apples", "pears", "plums", "cherries", "grapes")),
    ("Yearly rainfall per city", "city", ("Paris", "Rome", "Oslo", "Madrid", "Vienna")),
    ("Votes for each candidate", "candidate", ("Ana", "Ben", "Chloe", "Dev", "Eva")),
    ("Test accuracy per model", "model", ("model A", "model B", "model C", "model D", "model E")),
    ("Papers published per lab", "lab", ("lab Alpha", "lab Beta", "lab Gamma", "lab Delta", "lab Omega")),
    ("Books borrowed per library", "library", ("North", "South", "East", "West", "Central")),
)
# (title with two lines, title with one line, entity, labels, x unit)
LINE_TOPICS: tuple[tuple[str, str, str, tuple[str, ...], str], ...] = (
    ("Monthly visitors to two websites", "Monthly visitors to a website", "website", ("site A", "site B"), "month"),
    ("Sales of two products over time", "Sales of a product over time", "product", ("product X", "product Y"),
     "month"),
    ("Validation score of two training runs", "Validation score of a training run", "run", ("run 1", "run 2"),
     "epoch"),
    ("Average temperature in two towns", "Average temperature in a town", "town", ("Ashford", "Brook"), "week"),
    ("Downloads of two apps", "Downloads of an app", "app", ("app Kite", "app Lark"), "day"),
)


@dataclass(frozen=True)
class Series:
    """One bar (one value) or one line (one value per x step), drawn in `color`."""

    label: str
    color: str
    values: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "color": self.color, "values": list(self.values)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Series:
        return cls(label=d["label"], color=d["color"], values=tuple(int(v) for v in d["values"]))


@dataclass(frozen=True)
class Chart:
    kind: str  # "bar" | "line"
    title: str
    series: tuple[Series, ...]
    seed: int
    entity: str = "item"  # what one bar/line stands for ("city", "model", ...)
    x_unit: str = ""  # line charts: what one x step is ("month", "epoch", ...)
    background: str = "white"
    image_kind: str = field(default="chart", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "series", tuple(self.series))
        problems = []
        if self.kind not in CHART_KINDS:
            problems.append(f"kind {self.kind!r} not in {CHART_KINDS}")
        colors = [s.color for s in self.series]
        if len(set(colors)) != len(colors) or any(c not in vocab.COLORS for c in colors):
            problems.append(f"series colours {colors} must be distinct names from {vocab.COLORS}")
        if any(not 1 <= v <= Y_MAX for s in self.series for v in s.values):
            problems.append(f"values must be integers in 1..{Y_MAX}")
        if self.kind == "bar" and any(len(s.values) != 1 for s in self.series):
            problems.append("a bar chart has exactly one value per series (one series = one bar)")
        if self.kind == "line" and len({len(s.values) for s in self.series}) != 1:
            problems.append("all lines of a line chart need the same number of points")
        if problems:
            raise ValueError(f"bad chart {self.seed}: " + "; ".join(problems))

    # ----- serialisation -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"kind": "chart", "chart_kind": self.kind, "title": self.title, "seed": self.seed,
                "entity": self.entity, "x_unit": self.x_unit, "background": self.background,
                "series": [s.to_dict() for s in self.series]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Chart:
        if d.get("kind") != "chart":
            raise ValueError(f"not a chart (kind={d.get('kind')!r}); use scenes.Scene.from_dict")
        return cls(kind=d["chart_kind"], title=d["title"], series=tuple(Series.from_dict(s) for s in d["series"]),
                   seed=int(d["seed"]), entity=d.get("entity", "item"), x_unit=d.get("x_unit", ""),
                   background=d.get("background", "white"))

    # ----- queries ----------------------------------------------------------------------------------------
    @property
    def n_points(self) -> int:
        return len(self.series[0].values)

    def bar_value(self, color: str) -> int:
        return self.by_color(color).values[0]

    def by_color(self, color: str) -> Series:
        for s in self.series:
            if s.color == color:
                return s
        raise KeyError(f"no series drawn in {color} in chart {self.seed}")

    def tallest(self) -> Series:
        """The bar with the largest value (bar values are distinct, so it is unique)."""
        return max(self.series, key=lambda s: s.values[0])

    def shortest(self) -> Series:
        return min(self.series, key=lambda s: s.values[0])

    @staticmethod
    def trend(series: Series) -> str:
        """"up" if the line ends higher than it starts, else "down" (generated lines never end level)."""
        return "up" if series.values[-1] > series.values[0] else "down"

    @staticmethod
    def peak_index(series: Series) -> int:
        return max(range(len(series.values)), key=lambda k: series.values[k])

    def color_key(self) -> str:
        """"red is Paris, blue is Rome and green is Oslo"."""
        return join_words([f"{s.color} is {s.label}" for s in self.series])

    def facts_text(self) -> str:
        """The chart's data as plain text (what an annotator needs to write answers)."""
        if self.kind == "bar":
            bars = [f"{s.color} bar = {s.label}, value {s.values[0]}" for s in self.series]
            return "\n".join([
                f'Bar chart titled "{self.title}", {number_word(len(self.series))} bars, one per {self.entity}, on '
                f"a 0-{Y_MAX} scale (no numbers or labels are drawn; gridlines every 2 units).",
                "Bars from left to right: " + "; ".join(bars) + ".",
                f"Tallest: the {self.tallest().color} bar ({self.tallest().label}). "
                f"Shortest: the {self.shortest().color} bar ({self.shortest().label}).",
            ])
        lines = [f'Line chart titled "{self.title}", {number_word(len(self.series))} '
                 f"line{'s' if len(self.series) > 1 else ''} of {self.n_points} points (one per {self.x_unit}), "
                 f"on a 0-{Y_MAX} scale (no numbers or labels are drawn; gridlines every 2 units)."]
        for s in self.series:
            peak = self.peak_index(s)
            lines.append(f"{capitalize(s.color)} line = {s.label}: values {', '.join(map(str, s.values))}; "
                         f"goes {self.trend(s)} overall; highest at the {ordinal(peak)} point.")
        return "\n".join(lines)


# ----- generation --------------------------------------------------------------------------------------------
def _line_values(rng: random.Random, n: int, direction: str) -> tuple[int, ...]:
    """Distinct values whose first point is the minimum and last the maximum (for "up"), with one wiggle in
    the middle sometimes, so the overall trend is never in doubt."""
    values = sorted(rng.sample(range(1, Y_MAX + 1), n))
    if n >= 4 and rng.random() < 0.5:
        k = rng.randint(1, n - 3)
        values[k], values[k + 1] = values[k + 1], values[k]
    return tuple(values if direction == "up" else values[::-1])


def generate_chart(rng_or_seed: int | random.Random | np.random.Generator, kind: str | None = None) -> Chart:
    """A random bar chart (3-5 bars, distinct values) or line chart (1-2 lines, 4-6 points).

    Like scenes, a chart is rebuilt from its seed: `generate_chart(chart.seed) == chart`."""
    seed = seed_from(rng_or_seed)
    rng = random.Random(seed)
    kind = kind or rng.choice(CHART_KINDS)
    if kind == "bar":
        title, entity, labels = rng.choice(BAR_TOPICS)
        n = rng.randint(3, 5)
        colors = rng.sample(vocab.COLORS, n)
        values = rng.sample(range(1, Y_MAX + 1), n)
        series = tuple(Series(lab, col, (val,)) for lab, col, val in zip(labels[:n], colors, values))
        return Chart(kind="bar", title=title, series=series, seed=seed, entity=entity)
    if kind != "line":
        raise ValueError(f"chart kind must be one of {CHART_KINDS}, got {kind!r}")
    title_two, title_one, entity, labels, x_unit = rng.choice(LINE_TOPICS)
    n_lines, n_points = rng.randint(1, 2), rng.randint(4, 6)
    colors = rng.sample(vocab.COLORS, n_lines)
    while True:
        series = tuple(Series(labels[k], colors[k], _line_values(rng, n_points, rng.choice(("up", "down"))))
                       for k in range(n_lines))
        # two lines must start and end at different heights so "which ends higher" has one answer
        if n_lines == 1 or (series[0].values[0] != series[1].values[0]
                            and series[0].values[-1] != series[1].values[-1]):
            break
    title = title_two if n_lines == 2 else title_one
    return Chart(kind="line", title=title, series=series, seed=seed, entity=entity, x_unit=x_unit)


# ----- rendering ----------------------------------------------------------------------------------------------
_SUPERSAMPLE = 4
_AXIS_RGB = (60, 60, 60)
_GRID_RGB = (205, 205, 205)


def render_chart(chart: Chart, image_size: int = 96) -> Image.Image:
    """The chart as an RGB image (no text). Deterministic like render_scene."""
    if image_size < 32:
        raise ValueError(f"image_size {image_size} is too small for a chart; use at least 32 (default 96)")
    s = image_size * _SUPERSAMPLE
    img = Image.new("RGB", (s, s), vocab.BACKGROUND_RGB[chart.background])
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 0.12 * s, 0.95 * s, 0.08 * s, 0.90 * s
    plot_h = bottom - top

    def y_of(v: float) -> float:
        return bottom - v / Y_MAX * plot_h

    line_w = max(1, round(s / 96))
    for v in range(2, Y_MAX + 1, 2):
        draw.line([(left, y_of(v)), (right, y_of(v))], fill=_GRID_RGB, width=line_w * 2)
    if chart.kind == "bar":
        n = len(chart.series)
        slot = (right - left) / n
        for k, ser in enumerate(chart.series):
            x0 = left + k * slot + 0.18 * slot
            draw.rectangle([x0, y_of(ser.values[0]), x0 + 0.64 * slot, bottom], fill=vocab.COLOR_RGB[ser.color])
    else:
        n = chart.n_points
        pad = 0.06 * (right - left)
        xs = [left + pad + k * (right - left - 2 * pad) / (n - 1) for k in range(n)]
        dot = 2.6 * s / 96
        for ser in chart.series:
            pts = [(x, y_of(v)) for x, v in zip(xs, ser.values)]
            rgb = vocab.COLOR_RGB[ser.color]
            draw.line(pts, fill=rgb, width=round(2.2 * s / 96), joint="curve")
            for x, y in pts:
                draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=rgb)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=_AXIS_RGB, width=line_w * 3)
    return img.resize((image_size, image_size), Image.Resampling.BOX)
