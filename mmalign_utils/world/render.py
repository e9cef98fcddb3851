"""Deterministic rendering of ShapesWorld scenes to RGB images.

Shapes are drawn with PIL at 4x the target size and box-filtered down, which antialiases edges. PIL's drawing
and resampling are exact integer code, so the same scene gives the same pixels on every machine.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from mmalign_utils.world import vocab
from mmalign_utils.world.scenes import Scene, SceneObject

SUPERSAMPLE = 4
# The bounding circle of every shape is at most this many radii wide, so jitter never pushes a shape out of its
# cell (stars and triangles use a slightly larger outer radius than circles to look about as big).
_EXTENT = 1.1
_MARGIN_PX = 1.0  # at the target resolution


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Vertices of a polygon shape centred at (cx, cy) with nominal radius r (None for a circle)."""
    if shape == "square":
        h = 0.85 * r  # a square of half side 0.85 r has about the area of a circle of radius r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        big = 1.15 * r
        oy = cy + 0.25 * big  # centre the triangle's bounding box, not its circumcentre, on the cell point
        return [(cx + big * math.cos(math.radians(a)), oy + big * math.sin(math.radians(a))) for a in (-90, 30, 150)]
    if shape == "star":
        outer, inner = 1.1 * r, 0.45 * r
        pts = []
        for k in range(10):
            rad = outer if k % 2 == 0 else inner
            a = math.radians(-90 + 36 * k)
            pts.append((cx + rad * math.cos(a), cy + 0.05 * r + rad * math.sin(a)))
        return pts
    if shape == "circle":
        return None
    raise ValueError(f"unknown shape {shape!r}")


def object_geometry(obj: SceneObject, image_size: int) -> tuple[float, float, float]:
    """(cx, cy, r) of an object in pixels of an image_size x image_size image."""
    cell = image_size / vocab.GRID
    r = vocab.SIZE_RADIUS_FRACTION[obj.size] * cell
    room = max(0.0, cell / 2 - _EXTENT * r - _MARGIN_PX * image_size / 96)
    cx = (obj.col + 0.5) * cell + obj.dx * room
    cy = (obj.row + 0.5) * cell + obj.dy * room
    return cx, cy, r


def draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, image_size: int, scale: int = 1) -> None:
    """Draw one object on a canvas `scale` times larger than image_size."""
    cx, cy, r = (v * scale for v in object_geometry(obj, image_size))
    fill = vocab.COLOR_RGB[obj.color]
    poly = shape_polygon(obj.shape, cx, cy, r)
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(poly, fill=fill)


def render_scene(scene: Scene, image_size: int = 96) -> Image.Image:
    """The scene as an RGB PIL image of image_size x image_size pixels."""
    if image_size < 24:
        raise ValueError(f"image_size {image_size} is too small to show shapes; use at least 24 (default 96)")
    big = image_size * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), vocab.BACKGROUND_RGB[scene.background])
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        draw_object(draw, obj, image_size, SUPERSAMPLE)
    return canvas.resize((image_size, image_size), Image.Resampling.BOX)


def render_batch(scenes: Sequence[Scene], image_size: int = 96) -> np.ndarray:
    """Render many scenes into one uint8 array of shape [N, image_size, image_size, 3]."""
    out = np.empty((len(scenes), image_size, image_size, 3), dtype=np.uint8)
    for k, scene in enumerate(scenes):
        out[k] = np.asarray(render_scene(scene, image_size))
    return out
