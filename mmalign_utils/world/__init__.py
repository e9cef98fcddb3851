"""ShapesWorld: a procedurally generated visual world for the toy profile (see docs/world.md).

Scenes of coloured shapes on a 3x3 grid and small charts, rendered at 96 px, with question-answer items in the
families of the paper's data (LRV-Instruct-like VQA with negatives, SciGraphQA-like chart questions, detailed
descriptions, conversations, MMBench-like multiple choice) and a rule-based grounding checker.
"""
from mmalign_utils.world.charts import Chart, Series, generate_chart, render_chart
from mmalign_utils.world.datasets import (
    build_items, build_splits, item_from_row, items_from_hf, render_item, scene_seed, to_hf_dataset,
)
from mmalign_utils.world.grounding import GroundingReport, Mention, extract_mentions, ground, is_scene_talk
from mmalign_utils.world.qa import (
    FAMILIES, MC_SUFFIX, SHORT_ANSWER_SUFFIX, QAItem, make_items, with_mc_suffix, with_short_suffix,
)
from mmalign_utils.world.render import render_batch, render_scene
from mmalign_utils.world.scenes import Relation, Scene, SceneObject, generate_scene
from mmalign_utils.world.vocab import COLORS, COLS, ROWS, SHAPES, SIZES, position_phrase

__all__ = [
    "COLORS", "COLS", "FAMILIES", "MC_SUFFIX", "ROWS", "SHAPES", "SHORT_ANSWER_SUFFIX", "SIZES", "Chart",
    "GroundingReport", "Mention", "QAItem", "Relation", "Scene", "SceneObject", "Series", "build_items",
    "build_splits", "extract_mentions", "generate_chart", "generate_scene", "ground", "is_scene_talk",
    "item_from_row", "items_from_hf", "make_items", "position_phrase", "render_batch", "render_chart",
    "render_item", "render_scene", "scene_seed", "to_hf_dataset", "with_mc_suffix", "with_short_suffix",
]
