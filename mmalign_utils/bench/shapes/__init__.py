"""ShapesWorld editions of the paper's benchmarks (and of AMBER, MMHal-Bench, Object HalBench), exactly scorable
against the scene graph on held-out scenes, each scored by the official module's `score()`. See
docs/benchmarks_shapes.md.

    from mmalign_utils.bench.shapes import evaluate, to_result_rows, render_table4
    scores = evaluate(model, processor, n_per_split=100, seed=0)
"""
from mmalign_utils.bench.shapes.common import BENCH_SEED_BASE, AnswerRequest, bench_scene_seed, scene_image
from mmalign_utils.bench.shapes.editions import EDITIONS, OFFLINE_EDITIONS, Edition, get_edition
from mmalign_utils.bench.shapes.runner import answer_requests, evaluate, to_result_rows
from mmalign_utils.bench.shapes.table import paper_table4, render_table4

__all__ = [
    "BENCH_SEED_BASE", "EDITIONS", "OFFLINE_EDITIONS", "AnswerRequest", "Edition", "answer_requests",
    "bench_scene_seed", "evaluate", "get_edition", "paper_table4", "render_table4", "scene_image", "to_result_rows",
]
