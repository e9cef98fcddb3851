"""Build ShapesWorld item sets and export them as Hugging Face datasets with an Image column.

Scene seeds come from (seed, split, index) by construction, so a train set and a held-out set built with the
same `seed` never share a scene seed; `build_splits` also drops held-out scenes whose content equals a training
scene (same objects in the same cells).
"""
from __future__ import annotations

import io
import json
import random
from collections.abc import Iterable, Sequence
from typing import Any

from PIL import Image

from mmalign_utils.world.charts import Chart, generate_chart, render_chart
from mmalign_utils.world.qa import CHART_FAMILIES, FAMILIES, SHAPES_FAMILIES, QAItem, make_items
from mmalign_utils.world.render import render_scene
from mmalign_utils.world.scenes import Scene, generate_scene

SPLITS = ("train", "heldout")
_SPLIT_CODE = {"train": 0, "heldout": 1}
_MAX_SCENES = 10_000_000  # scene index limit per (seed, split) that keeps seeds of different splits apart

HF_COLUMNS = ("image", "id", "family", "kind", "question", "short_answer", "detailed_answer", "scene_json",
              "extra_json", "scene_seed", "label")


def scene_seed(seed: int, split: str, index: int) -> int:
    """The seed of scene `index` of a split: distinct for every (seed, split, index) with index < 10^7."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= index < _MAX_SCENES:
        raise ValueError(f"scene index {index} outside 0..{_MAX_SCENES - 1}")
    return (seed * 2 + _SPLIT_CODE[split]) * _MAX_SCENES + index


def _check_families(families: Sequence[str]) -> None:
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; choose from {FAMILIES}")


def visual_for_seed(seed_value: int, charts_share: float, chart_allowed: bool) -> Scene | Chart:
    """The scene or chart of one scene seed (whether it is a chart is drawn from the seed too)."""
    if chart_allowed and random.Random(seed_value).random() < charts_share:
        return generate_chart(seed_value)
    return generate_scene(seed_value)


def build_items(n_scenes: int, families: Sequence[str] = FAMILIES, seed: int = 0, charts_share: float = 0.2,
                split: str = "train", items_per_family: int = 1, skip_keys: set | None = None) -> list[QAItem]:
    """Items for n_scenes images: every requested family that fits each image, items_per_family each.

    A share `charts_share` of the images are charts, but only if "chart" is among the families; a chart gets the
    requested families among CHART_FAMILIES (chart, describe, conversation), a shapes scene the others.
    skip_keys: Scene.key() values to avoid (the next index is used instead)."""
    _check_families(families)
    chart_allowed = "chart" in families
    rng = random.Random(scene_seed(seed, split, 0) + 7919)  # question choices; scenes come from their own seeds
    items: list[QAItem] = []
    made, index = 0, 0
    while made < n_scenes:
        visual = visual_for_seed(scene_seed(seed, split, index), charts_share, chart_allowed)
        index += 1
        if skip_keys is not None and isinstance(visual, Scene) and visual.key() in skip_keys:
            continue
        allowed = CHART_FAMILIES if isinstance(visual, Chart) else SHAPES_FAMILIES
        for family in families:
            if family in allowed:
                items.extend(make_items(visual, family, rng, n=items_per_family))
        made += 1
    return items


def build_splits(n_train_scenes: int, n_heldout_scenes: int, families: Sequence[str] = FAMILIES, seed: int = 0,
                 charts_share: float = 0.2, items_per_family: int = 1) -> dict[str, list[QAItem]]:
    """{"train": [...], "heldout": [...]} with no scene seed and no scene content shared between them."""
    train = build_items(n_train_scenes, families, seed, charts_share, "train", items_per_family)
    train_keys = {Scene.from_dict(it.scene).key() for it in train if it.kind == "shapes"}
    heldout = build_items(n_heldout_scenes, families, seed, charts_share, "heldout", items_per_family,
                          skip_keys=train_keys)
    return {"train": train, "heldout": heldout}


def render_item(item: QAItem, image_size: int = 96) -> Image.Image:
    """The image an item is about."""
    visual = item.visual()
    return render_chart(visual, image_size) if isinstance(visual, Chart) else render_scene(visual, image_size)


def _extra_payload(item: QAItem) -> dict[str, Any]:
    return {"label": item.label, "negative_strategy": item.negative_strategy, "options": item.options,
            "answer_letter": item.answer_letter, "turns": [list(t) for t in item.turns] if item.turns else None,
            "extra": item.extra}


def to_hf_dataset(items: Sequence[QAItem], image_size: int = 96):
    """A datasets.Dataset with an `image` column (feature datasets.Image()) and the item fields; every scene is
    rendered once however many items share it. Round trip with `items_from_hf`."""
    import datasets

    cache: dict[str, dict] = {}  # scene json -> encoded PNG, so a scene shared by many items is encoded once
    columns: dict[str, list] = {name: [] for name in HF_COLUMNS}
    for item in items:
        scene_json = json.dumps(item.scene, sort_keys=True)
        if scene_json not in cache:
            buf = io.BytesIO()
            render_item(item, image_size).save(buf, format="PNG")
            cache[scene_json] = {"bytes": buf.getvalue(), "path": None}
        columns["image"].append(cache[scene_json])
        columns["id"].append(item.id)
        columns["family"].append(item.family)
        columns["kind"].append(item.kind)
        columns["question"].append(item.question)
        columns["short_answer"].append(item.short_answer)
        columns["detailed_answer"].append(item.detailed_answer)
        columns["scene_json"].append(scene_json)
        columns["extra_json"].append(json.dumps(_extra_payload(item), sort_keys=True))
        columns["scene_seed"].append(item.scene_seed)
        columns["label"].append(item.label or "")
    features = datasets.Features({
        "image": datasets.Image(), "id": datasets.Value("string"), "family": datasets.Value("string"),
        "kind": datasets.Value("string"), "question": datasets.Value("string"),
        "short_answer": datasets.Value("string"), "detailed_answer": datasets.Value("string"),
        "scene_json": datasets.Value("string"), "extra_json": datasets.Value("string"),
        "scene_seed": datasets.Value("int64"), "label": datasets.Value("string"),
    })
    return datasets.Dataset.from_dict(columns, features=features)


def item_from_row(row: dict[str, Any]) -> QAItem:
    """Rebuild a QAItem from one row of `to_hf_dataset` (the image column is ignored)."""
    try:
        payload = json.loads(row["extra_json"])
        scene = json.loads(row["scene_json"])
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"row {row.get('id', '?')}: not a ShapesWorld row ({e}); build it with to_hf_dataset") from e
    turns = [tuple(t) for t in payload["turns"]] if payload.get("turns") else None
    return QAItem(id=row["id"], family=row["family"], question=row["question"], short_answer=row["short_answer"],
                  detailed_answer=row["detailed_answer"], scene=scene, kind=row["kind"], label=payload["label"],
                  negative_strategy=payload["negative_strategy"], options=payload["options"],
                  answer_letter=payload["answer_letter"], turns=turns, extra=payload["extra"])


def items_from_hf(dataset: Iterable[dict[str, Any]]) -> list[QAItem]:
    """All items of a dataset made by to_hf_dataset (images are not decoded)."""
    if hasattr(dataset, "remove_columns") and "image" in getattr(dataset, "column_names", ()):
        dataset = dataset.remove_columns("image")
    return [item_from_row(row) for row in dataset]
