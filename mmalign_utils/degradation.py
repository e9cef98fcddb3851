"""Notebook 01's analysis: how visual instruction tuning changed text-only instruction following.

The same held-out text instructions go to the base LLM, to the MLLM, and to the MLLM with an irrelevant image
in front of every prompt (the paper's noisy-image MT-Bench, Table 7). Each answer is scored by the verifiable
checkers of `textsuite`, and its length, repetition, topic coverage and whether it talks about the visual world
are measured; `summarize` aggregates with bootstrap 95% CIs over prompts.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mmalign_utils.generate import Conversation, GenerationSettings, generate
from mmalign_utils.results import ResultRow, bootstrap_ci, paired_bootstrap_diff
from mmalign_utils.textsuite import per_prompt_table
from mmalign_utils.world.grounding import is_scene_talk

# Per-prompt columns that are summarised (name in per_prompt_table -> metric name in results.csv).
SUMMARY_METRICS = {
    "strict": "prompt_strict_acc",
    "loose": "prompt_loose_acc",
    "instr_strict": "instruction_strict_acc",
    "coverage": "topic_coverage",
    "n_words": "mean_words",
    "scene_talk": "scene_talk_share",
    "empty": "empty_share",
}


def text_conversations(prompts: Sequence, image=None) -> list[Conversation]:
    """One user turn per prompt; with `image`, the image goes first (LLaVA's `<image>\\n` + text layout)."""
    return [Conversation.user(p.prompt, image) for p in prompts]


def answer_text_suite(model, processor, prompts: Sequence, image=None, max_new_tokens: int = 200,
                      batch_size: int = 16, desc: str = "text suite") -> list[str]:
    """Greedy answers to the text suite (greedy: the comparison is between models, not samples)."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size)
    return generate(model, processor, text_conversations(prompts, image), settings, progress=desc)


def score_condition(prompts: Sequence, responses: Sequence[str], condition: str, tokenizer=None) -> pd.DataFrame:
    """Per-prompt table for one condition (model, image or not) with the scene-talk flag added."""
    table = per_prompt_table(prompts, responses, tokenizer=tokenizer)
    table.insert(0, "condition", condition)
    table["prompt"] = [p.prompt for p in prompts]
    table["scene_talk"] = [float(is_scene_talk(r)) for r in responses]
    table["response"] = list(responses)
    return table


def summarize(per_prompt: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Mean and bootstrap 95% CI over prompts of every summary metric, per condition."""
    rows = []
    for condition, group in per_prompt.groupby("condition", sort=False):
        for column, metric in SUMMARY_METRICS.items():
            if column not in group:
                continue
            value, lo, hi = bootstrap_ci(group[column].astype(float).to_numpy(), seed=seed)
            rows.append({"condition": condition, "metric": metric, "value": value, "ci_low": lo, "ci_high": hi,
                         "n": len(group)})
    return pd.DataFrame(rows)


def paired_difference(per_prompt: pd.DataFrame, a: str, b: str, column: str = "strict", seed: int = 0) -> dict:
    """Mean of (a - b) over the same prompts with a paired bootstrap CI: is a really worse than b?"""
    left = per_prompt[per_prompt.condition == a].set_index("id")[column].astype(float)
    right = per_prompt[per_prompt.condition == b].set_index("id")[column].astype(float)
    common = left.index.intersection(right.index)
    diff, lo, hi = paired_bootstrap_diff(left[common].to_numpy(), right[common].to_numpy(), seed=seed)
    return {"a": a, "b": b, "metric": column, "mean_diff": diff, "ci_low": lo, "ci_high": hi, "n": len(common)}


def result_rows(summary: pd.DataFrame, models: dict[str, str], notebook: str, seed: int, profile: str,
                benchmark: str = "text-suite", noisy_conditions: Sequence[str] = ()) -> list[ResultRow]:
    """Rows for results.csv; `models` maps a condition to its model name. The split says whether an irrelevant
    image was in the context: "noisy-image" for the conditions named in `noisy_conditions`, else "text"."""
    rows = []
    for r in summary.itertuples():
        split = "noisy-image" if r.condition in noisy_conditions else "text"
        rows.append(ResultRow(notebook=notebook, model=models[r.condition], benchmark=benchmark, split=split,
                              metric=r.metric, value=r.value, n=r.n, ci_low=r.ci_low, ci_high=r.ci_high,
                              seed=seed, profile=profile, protocol="strict+loose", judge="rules"))
    return rows


def side_by_side(per_prompt: pd.DataFrame, conditions: Sequence[str], n: int = 5, seed: int = 0,
                 width: int = 400) -> pd.DataFrame:
    """A few prompts with every condition's answer next to each other (answers cut at `width` characters)."""
    ids = per_prompt["id"].drop_duplicates()
    chosen = ids.sample(n=min(n, len(ids)), random_state=seed)
    wide = per_prompt[per_prompt.id.isin(chosen)].pivot(index="id", columns="condition", values="response")
    wide = wide[[c for c in conditions if c in wide.columns]]
    prompts = per_prompt.drop_duplicates("id").set_index("id")["prompt"] if "prompt" in per_prompt else None
    if prompts is not None:
        wide.insert(0, "prompt", prompts[wide.index])
    return wide.map(lambda t: t if len(str(t)) <= width else str(t)[:width] + " ...")


def plot_degradation(summary: pd.DataFrame, per_prompt: pd.DataFrame, conditions: Sequence[str]):
    """Three panels: instruction following (strict/loose), answer length distribution, scene talk."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / len(conditions)
    for ax, metrics, title in ((axes[0], ["prompt_strict_acc", "prompt_loose_acc", "instruction_strict_acc"],
                                "instruction following (95% CI)"),
                               (axes[2], ["topic_coverage", "scene_talk_share"], "coverage and scene talk")):
        for i, cond in enumerate(conditions):
            sub = summary[(summary.condition == cond)].set_index("metric").reindex(metrics)
            x = np.arange(len(metrics)) + i * width
            err = np.vstack([sub.value - sub.ci_low, sub.ci_high - sub.value])
            ax.bar(x, sub.value, width, yerr=err, capsize=3, label=cond, color=colours[i % len(colours)])
        ax.set_xticks(np.arange(len(metrics)) + width * (len(conditions) - 1) / 2)
        ax.set_xticklabels([m.replace("_", " ") for m in metrics], rotation=15)
        ax.set_title(title)
        ax.set_ylim(0, 1)
    for i, cond in enumerate(conditions):
        words = per_prompt[per_prompt.condition == cond].n_words
        axes[1].hist(words, bins=20, alpha=0.5, label=f"{cond} (mean {words.mean():.0f})",
                     color=colours[i % len(colours)])
    axes[1].set_xlabel("answer length (words)")
    axes[1].set_title("answer lengths")
    axes[1].legend(fontsize=8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def load_models(ctx) -> dict:
    """The two models notebook 01 compares, for the run's profile.

    toy:   SmolLM2-135M-Instruct and the toy LLaVA built from it (trained here on first use, then reused).
    paper: Vicuna-1.5-7B and LLaVA-1.5-7B (llava-hf), as in the paper's Table 6/7 7B rows.
    """
    from mmalign_utils.models import load_base_llm, load_mllm

    dtype = ctx.spec.torch_dtype
    if ctx.profile == "toy":
        from mmalign_utils.train.vit import ensure_toy_llava

        mllm_path, vit_report = ensure_toy_llava(ctx)
        base, base_tok = load_base_llm("toy", dtype=dtype)
        mllm, processor = load_mllm(mllm_path, dtype=dtype)
        names = {"base": "smollm2-135m-instruct", "mllm": "toy-llava"}
    else:
        vit_report = None
        base, base_tok = load_base_llm("paper", name="lmsys/vicuna-7b-v1.5", dtype=dtype)
        mllm, processor = load_mllm("llava-hf/llava-1.5-7b-hf", dtype=dtype, device=ctx.spec.device)
        names = {"base": "vicuna-7b-v1.5", "mllm": "llava-1.5-7b-hf"}
    return {"base": base, "base_tokenizer": base_tok, "mllm": mllm, "processor": processor, "names": names,
            "vit_report": vit_report}


def irrelevant_image(ctx, path: str | None = None, seed: int = 12345):
    """An image that has nothing to do with the text prompt: the file at `path` (the paper used a random COCO
    train2017 image), else a random ShapesWorld scene."""
    if path:
        from PIL import Image

        return Image.open(path).convert("RGB")
    from mmalign_utils.world.render import render_scene
    from mmalign_utils.world.scenes import generate_scene

    return render_scene(generate_scene(np.random.default_rng(seed)), 96)


def vit_result_rows(report: dict, model: str, notebook: str, seed: int, profile: str) -> list[ResultRow]:
    """The toy build's own measurements: VQA accuracy beside chance and beside the same questions asked with
    another scene's image (the control for seeing), and the natural share of the long-form answers."""
    rows = [ResultRow(notebook=notebook, model=model, benchmark="shapes-vqa", split=r["family"], metric=metric,
                      value=r[key], n=r["n"], seed=seed, profile=profile, protocol="normalized-exact-match")
            for r in report["vqa"]["by_family"]
            for metric, key in (("accuracy", "accuracy"), ("chance", "chance"),
                                ("accuracy_other_image", "accuracy_other_image"))
            if key in r]  # builds before the other-image control have no such key
    rows.append(ResultRow(notebook=notebook, model=model, benchmark="shapes-vqa", split="all-shapes",
                          metric="accuracy", value=report["vqa"]["accuracy_shapes"],
                          n=sum(r["n"] for r in report["vqa"]["by_family"] if r["family"] != "chart"),
                          seed=seed, profile=profile, protocol="normalized-exact-match"))
    rows.append(ResultRow(notebook=notebook, model=model, benchmark="vit-data", split="longform",
                          metric="natural_sentence_share", value=report["longform"]["natural_share"],
                          n=report["longform"]["n_sentences"], seed=seed, profile=profile))
    return rows


def conclusion(summary: pd.DataFrame, base: str, mllm: str, noisy: str | None = None) -> str:
    """Plain sentences stating what this run measured (no claim the numbers do not support)."""
    def get(cond: str, metric: str) -> pd.Series:
        return summary[(summary.condition == cond) & (summary.metric == metric)].iloc[0]

    lines = []
    b, m = get(base, "prompt_strict_acc"), get(mllm, "prompt_strict_acc")
    separated = m.ci_high < b.ci_low
    lines.append(f"Prompt-level strict accuracy: {base} {b.value:.3f} [{b.ci_low:.3f}, {b.ci_high:.3f}], "
                 f"{mllm} {m.value:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}] -> "
                 + ("the MLLM is worse and the 95% CIs do not overlap." if separated else
                    "the MLLM is lower." if m.value < b.value else "no degradation on this metric."))
    bw, mw = get(base, "mean_words"), get(mllm, "mean_words")
    lines.append(f"Mean answer length: {base} {bw.value:.0f} words, {mllm} {mw.value:.0f} words "
                 f"({(mw.value / bw.value - 1) * 100:+.0f}%).")
    bc, mc = get(base, "topic_coverage"), get(mllm, "topic_coverage")
    lines.append(f"Topic coverage: {base} {bc.value:.2f}, {mllm} {mc.value:.2f}.")
    st = get(mllm, "scene_talk_share")
    lines.append(f"Share of {mllm} text answers that talk about shapes, colours or positions: {st.value:.0%}"
                 f" (base LLM {get(base, 'scene_talk_share').value:.0%}).")
    if noisy is not None and (summary.condition == noisy).any():
        n = get(noisy, "prompt_strict_acc")
        lines.append(f"With an irrelevant image in the context the MLLM scores {n.value:.3f} "
                     f"(scene talk {get(noisy, 'scene_talk_share').value:.0%}).")
    return "\n".join(lines)
