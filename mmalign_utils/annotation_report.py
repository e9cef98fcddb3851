"""Tables, plots and the pair viewer of notebook 02 (self-sampling and annotation), and the dataset export.

    df = answers_frame(prompts)                     one row per sampled answer with its five scores
    plot_score_histograms(df)                        the five attributes and quality, 0-4 / 0-12
    plot_correlation_heatmap(pair_difference_correlations(prompts))   like the paper's Figure 3
    spread = spread_summary(prompts)                 within-prompt spread of quality (does sampling give signal?)
    plot_margins(prompts, dpo)                       spread per prompt and margin per DPO pair
    pair_viewer(dpo, reasoning)                      ipywidgets: image, question, chosen and rejected with scores
    pair_signal_by_group(prompts, dpo, families)     chosen vs rejected length and quality per question family
    funnel_table(spread, report, df)                 ours beside the paper's annotation funnel (share with a pair, ...)
    datasets = build_datasets(prompts, seed)         the four training sets and the ablation subsets
    save_datasets(datasets, root, ...)               save_to_disk + dataset cards with the signal report
"""
from __future__ import annotations

import hashlib
import io
import math
import shutil
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmalign_utils.formats import message_text
from mmalign_utils.preference import (
    ATTRIBUTES, AnnotatedPrompt, build_dpo_pairs, build_rejection_sampling, build_sft, build_steerlm,
    dataset_card, flip_labels, pair_signal_report, quality, save_dataset, subset_by_image, word_count,
)
from mmalign_utils.results import ResultRow

SCORE_COLUMNS = (*ATTRIBUTES, "quality")
ABLATION_FRACTIONS = (0.25, 0.5, 0.75)
DEFAULT_GEMINI = "gemini:gemini-2.5-flash"


# ------------------------------------------------------------------------------------------------------------
# The judge


def resolve_judge_spec(judge: str) -> str:
    """The notebook's `judge` parameter as a make_judge spec: "gemini" means gemini:gemini-2.5-flash."""
    return DEFAULT_GEMINI if judge.strip() == "gemini" else judge.strip()


def annotation_store_dir(annotation_root: str | Path, samples_path: str | Path, judge_id: str) -> Path:
    """Where one judge's annotations of one samples file live: {annotation_root}/<samples stem>/<judge id>, so
    other sampling settings or judges never share a store."""
    return Path(annotation_root) / Path(samples_path).stem / store_folder_name(judge_id)


def store_folder_name(judge_id: str) -> str:
    """A judge id as a folder name ("oracle:shapesworld-v2" -> "oracle_shapesworld-v2")."""
    return judge_id.replace(":", "_").replace("/", "_")


def writer_prompt_hash() -> str:
    """SHA-256 of the instructions the judge wrote the sft_judge answers under (annotate.write)."""
    from mmalign_utils.annotate.write import WRITER_SYSTEM

    return hashlib.sha256(WRITER_SYSTEM.encode()).hexdigest()


def samples_file_name(k: int, temperature: float, max_new_tokens: int, lrv_mix: str = "", chart_mix: str = "",
                      top_p: float = 1.0) -> str:
    """The self-sampling file of one setting: other settings (or question mixes) never share a file, and the
    annotations of each go to a folder named after it."""
    mixes = f"{lrv_mix.strip()}|{chart_mix.strip()}"
    tag = "" if mixes == "|" else "_mix-" + hashlib.sha256(mixes.encode()).hexdigest()[:8]
    nucleus = "" if top_p >= 1.0 else f"_p{top_p:g}"
    return f"samples_k{k}_t{temperature:g}{nucleus}_m{max_new_tokens}{tag}.jsonl"


def judge_prompt_hash(judge_id: str) -> str:
    """SHA-256 of what defines the judge's instructions: our rating guide and system prompt for AI judges, the
    rules' version for the oracle (which reads no prompt)."""
    from mmalign_utils.annotate.rubric import RATING_GUIDE, SYSTEM_PROMPT

    if "oracle:" in judge_id:
        from mmalign_utils.judges.oracle import ORACLE_VERSION

        text = f"shapesworld-oracle-rules-v{ORACLE_VERSION}"
    else:
        text = SYSTEM_PROMPT + "\n" + RATING_GUIDE
    return hashlib.sha256(text.encode()).hexdigest()


def judge_calibration(samples: Sequence[Mapping[str, Any]], prompts: Sequence[Any], judge_specs: Sequence[str],
                      annotation_root: str | Path, samples_path: str | Path, seed: int = 0,
                      progress: bool = True) -> pd.DataFrame:
    """Annotate the same sampled answers with each judge spec (stores reused: annotate() resumes) and compare the
    judges' attribute structure with the paper's Figure 3 and the pairs each would give. One row per judge:
    figure3_distance (mean |r ours - r paper| over Figure 3's ten pairs), the Figure 3 entries most about length
    (verbosity and complexity against helpfulness), the pair funnel and the chosen/rejected lengths."""
    from mmalign_utils.annotate import annotate, load_annotations
    from mmalign_utils.judges.factory import make_judge
    from mmalign_utils.report import figure3_distance
    from mmalign_utils.sampling import to_annotated_prompts, to_annotation_items

    items = to_annotation_items(samples, prompts)
    k = len(samples[0]["answers"]) if samples else 0
    rows = []
    for spec in judge_specs:
        judge = make_judge(spec)
        store = annotation_store_dir(annotation_root, samples_path, judge.judge_id)
        annotate(items, judge, store, k=k, concurrency=1, progress=progress)
        annotated = to_annotated_prompts(samples, load_annotations(store), prompts)
        corr = pair_difference_correlations(annotated)
        dpo = build_dpo_pairs(annotated, seed=seed)
        report = pair_signal_report(annotated, dpo)
        spread = spread_summary(annotated)
        rows.append({
            "judge": judge.judge_id, "figure3_distance": figure3_distance(corr),
            "r_verbosity_helpfulness": corr.loc["verbosity", "helpfulness"],
            "r_complexity_helpfulness": corr.loc["complexity", "helpfulness"],
            "r_length_helpfulness": corr.loc["length", "helpfulness"],
            "share_prompts_with_pair": spread["share_with_pair"], "n_pairs": report["n_pairs"],
            "chosen_quality": report["chosen"]["quality"], "rejected_quality": report["rejected"]["quality"],
            "chosen_words": report["chosen"]["length_words"], "rejected_words": report["rejected"]["length_words"],
            "share_chosen_longer": report["share_chosen_longer"],
            "quality_length_corr_within_prompt": report["quality_length_corr_within_prompt"],
        })
    return pd.DataFrame(rows).set_index("judge")


# ------------------------------------------------------------------------------------------------------------
# Tables


def answers_frame(prompts: Sequence[AnnotatedPrompt], families: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per sampled answer: prompt_id, source, family, image_id, answer_index, answer, words, the five
    scores, quality (helpfulness + correctness + coherence) and quality_spread of its prompt."""
    rows = []
    for p in prompts:
        qualities = [quality(s) for s in p.scores]
        for i, (answer, scores) in enumerate(zip(p.answers, p.scores)):
            rows.append({"prompt_id": p.prompt_id, "source": p.source,
                         "family": (families or {}).get(p.prompt_id, ""), "image_id": p.image_id,
                         "answer_index": i, "answer": answer, "words": word_count(answer),
                         **{a: int(scores[a]) for a in ATTRIBUTES}, "quality": qualities[i],
                         "quality_spread": max(qualities) - min(qualities)})
    return pd.DataFrame(rows)


def score_summary(df: pd.DataFrame, by: str = "source") -> pd.DataFrame:
    """Mean scores and length per group (e.g. source or family), with the number of answers."""
    table = df.groupby(by)[[*SCORE_COLUMNS, "words", "quality_spread"]].mean()
    table.insert(0, "answers", df.groupby(by).size())
    return table


def pair_difference_correlations(prompts: Sequence[AnnotatedPrompt]) -> pd.DataFrame:
    """Pearson correlations between the attribute differences of every pair of answers to the same prompt,
    the quantity of the paper's Figure 3 (which used pairs with a human preference label), with a "length"
    row and column (word difference)."""
    return score_difference_correlations([p.scores for p in prompts], [p.answers for p in prompts])


def score_difference_correlations(score_lists: Sequence[Sequence[Mapping[str, Any]]],
                                  answer_lists: Sequence[Sequence[str]] | None = None) -> pd.DataFrame:
    """The pair-difference correlations from bare score lists (one list of k attribute dicts per prompt). Each
    unordered pair of one prompt's answers enters once, the difference taken first-minus-second; the "length"
    row and column (word difference) only when `answer_lists` is given. attrs: n_pairs, n_prompts."""
    diffs = []
    for n, scores in enumerate(score_lists):
        for i, j in combinations(range(len(scores)), 2):
            diff = {a: float(scores[i][a]) - float(scores[j][a]) for a in ATTRIBUTES}
            if answer_lists is not None:
                diff["length"] = float(word_count(answer_lists[n][i]) - word_count(answer_lists[n][j]))
            diffs.append(diff)
    corr = pd.DataFrame(diffs, columns=[*ATTRIBUTES, *(["length"] if answer_lists is not None else [])]).corr()
    corr.attrs.update({"n_pairs": len(diffs), "n_prompts": len(score_lists)})
    return corr


def attribute_correlations(df: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlations of the raw scores (and length) over all answers."""
    return df[[*ATTRIBUTES, "words"]].corr()


def spread_summary(prompts: Sequence[AnnotatedPrompt], min_gap: float = 2) -> dict[str, Any]:
    """Within-prompt spread of quality: mean and median of max - min, the share of prompts with a spread of at
    least `min_gap` (those give a DPO pair under the paper's rule), by source too."""
    spreads = pd.DataFrame([{"source": p.source, "spread": max(map(quality, p.scores)) - min(map(quality, p.scores)),
                             "std": float(np.std([quality(s) for s in p.scores]))} for p in prompts])
    if spreads.empty:
        return {"n_prompts": 0, "spread_mean": math.nan, "spread_median": math.nan, "share_with_pair": math.nan,
                "quality_std_mean": math.nan, "by_source": {}}
    by_source = {source: {"n_prompts": int(len(g)), "spread_mean": float(g["spread"].mean()),
                          "share_with_pair": float((g["spread"] >= min_gap).mean())}
                 for source, g in spreads.groupby("source")}
    return {"n_prompts": int(len(spreads)), "spread_mean": float(spreads["spread"].mean()),
            "spread_median": float(spreads["spread"].median()),
            "share_with_pair": float((spreads["spread"] >= min_gap).mean()),
            "quality_std_mean": float(spreads["std"].mean()), "min_gap": min_gap, "by_source": by_source}


def signal_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """`pair_signal_report`'s chosen and rejected means as a two-row table (attributes, quality, words)."""
    return pd.DataFrame({side: report[side] for side in ("chosen", "rejected")}).T


# The paper's annotation funnel (paper-recipe.md §3.6; notebook outputs on an earlier data version of LLaVA-1.5-13B
# samples rated by Gemini): 6,134 complete groups of 4, 2,700 of them with a quality gap >= 2; chosen 9.01 (sd 2.34),
# rejected 5.16 (sd 2.71); sampled candidates 6.54 on average (a set of 4,587 prompts).
PAPER_FUNNEL = {"share of prompts giving a pair": 2700 / 6134, "chosen quality (mean)": 9.01,
                "rejected quality (mean)": 5.16, "sampled answer quality (mean)": 6.54}


def funnel_table(spread: Mapping[str, Any], report: Mapping[str, Any], df: pd.DataFrame) -> pd.DataFrame:
    """Ours beside the paper's annotation funnel: how often the k samples differ enough for a pair, and how good
    chosen, rejected and all sampled answers are (quality 0-12). A toy whose samples differ far more (or less)
    than LLaVA-1.5-13B's at T 1.2 is sampling in another regime."""
    ours = {"share of prompts giving a pair": spread["share_with_pair"],
            "chosen quality (mean)": report["chosen"]["quality"],
            "rejected quality (mean)": report["rejected"]["quality"],
            "sampled answer quality (mean)": float(df["quality"].mean()) if len(df) else math.nan}
    return pd.DataFrame({"ours": ours, "paper (earlier data version)": PAPER_FUNNEL})


def pair_signal_by_group(prompts: Sequence[AnnotatedPrompt], dpo, groups: Mapping[str, str]) -> pd.DataFrame:
    """`pair_signal_report` for each group of prompts (e.g. question family: `groups` maps prompt_id to it), as a
    table: prompts, pairs, chosen and rejected quality and words, share of pairs whose chosen answer is longer,
    and the within-prompt correlation of quality and length. Tells which kinds of question make the pairs prefer
    shorter or longer answers (on a short-answer question extra words can only add errors; on a description they
    can add coverage)."""
    by_group: dict[str, list[AnnotatedPrompt]] = {}
    for p in prompts:
        by_group.setdefault(groups.get(p.prompt_id, ""), []).append(p)
    pair_ids = list(dpo["prompt_id"]) if len(dpo) else []
    rows = []
    for name, members in sorted(by_group.items()):
        ids = {p.prompt_id for p in members}
        report = pair_signal_report(members, dpo.select([i for i, pid in enumerate(pair_ids) if pid in ids]))
        rows.append({"group": name, "prompts": report["n_prompts"], "pairs": report["n_pairs"],
                     "chosen_quality": report["chosen"]["quality"], "rejected_quality": report["rejected"]["quality"],
                     "chosen_words": report["chosen"]["length_words"],
                     "rejected_words": report["rejected"]["length_words"],
                     "share_chosen_longer": report["share_chosen_longer"],
                     "quality_length_corr_within_prompt": report["quality_length_corr_within_prompt"]})
    return pd.DataFrame(rows).set_index("group")


def demand_compliance(prompts: Sequence[AnnotatedPrompt], dpo, formats: Mapping[str, Mapping[str, Any]]
                      ) -> pd.DataFrame:
    """How the sampled answers meet the prompts' answer-format demands (`formats` maps prompt_id to its
    `world.answer_format` spec; prompts without one are left out), one row per demand kind: prompts, share of
    answers that honour the demand, share of prompts whose k answers differ in it (only those can give a pair
    that teaches it), pairs, and the share of pairs whose chosen answer alone honours it, or the rejected alone."""
    from mmalign_utils.world.answer_format import honours

    pair_ids = list(dpo["prompt_id"]) if len(dpo) else []
    pairs_by_prompt: dict[str, list[int]] = {}
    for i, pid in enumerate(pair_ids):
        pairs_by_prompt.setdefault(pid, []).append(i)
    rows: dict[str, dict[str, float]] = {}
    for p in prompts:
        spec = formats.get(p.prompt_id)
        if not spec:
            continue
        row = rows.setdefault(spec["kind"], {"prompts": 0, "answers": 0, "honoured": 0, "mixed": 0, "pairs": 0,
                                             "chosen_only": 0, "rejected_only": 0})
        met = [honours(a, spec) for a in p.answers]
        row["prompts"] += 1
        row["answers"] += len(met)
        row["honoured"] += sum(met)
        row["mixed"] += 0 < sum(met) < len(met)
        for i in pairs_by_prompt.get(p.prompt_id, []):
            chosen = honours(message_text(dpo[i]["chosen"][-1]), spec)
            rejected = honours(message_text(dpo[i]["rejected"][-1]), spec)
            row["pairs"] += 1
            row["chosen_only"] += chosen and not rejected
            row["rejected_only"] += rejected and not chosen
    table = [{"demand": kind, "prompts": r["prompts"], "share_answers_honouring": r["honoured"] / r["answers"],
              "share_prompts_mixed": r["mixed"] / r["prompts"], "pairs": r["pairs"],
              "share_pairs_chosen_only_honours": r["chosen_only"] / r["pairs"] if r["pairs"] else math.nan,
              "share_pairs_rejected_only_honours": r["rejected_only"] / r["pairs"] if r["pairs"] else math.nan}
             for kind, r in sorted(rows.items())]
    columns = ["demand", "prompts", "share_answers_honouring", "share_prompts_mixed", "pairs",
               "share_pairs_chosen_only_honours", "share_pairs_rejected_only_honours"]
    return pd.DataFrame(table, columns=columns).set_index("demand")


# ------------------------------------------------------------------------------------------------------------
# Plots (matplotlib figures; the notebook shows and saves them)


def plot_score_histograms(df: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(11, 5.5))
    for ax, column in zip(axes.flat, SCORE_COLUMNS):
        top = 12 if column == "quality" else 4
        counts = df[column].value_counts().reindex(range(top + 1), fill_value=0)
        ax.bar(counts.index, counts.values, color="#4c72b0" if column != "quality" else "#dd8452")
        ax.set_title(column)
        ax.set_xticks(range(0, top + 1, 1 if top == 4 else 2))
    axes.flat[0].set_ylabel("answers")
    axes.flat[3].set_ylabel("answers")
    fig.suptitle(f"Judge scores of {len(df)} sampled answers")
    fig.tight_layout()
    return fig


def draw_correlation(ax, corr: pd.DataFrame):
    """A correlation matrix as an annotated heatmap on `ax` (shared by notebooks 02 and 07); returns the image."""
    values = corr.to_numpy(dtype=float)
    image = ax.imshow(values, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(corr.columns)), corr.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(corr.index)), corr.index)
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, "nan" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=8,
                color="white" if abs(value) > 0.6 else "black")
    return image


def plot_correlation_heatmap(corr: pd.DataFrame, title: str = "Correlation of attribute differences within prompts"):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    image = draw_correlation(ax, corr)
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_margins(prompts: Sequence[AnnotatedPrompt], dpo, min_gap: float = 2):
    """Left: within-prompt quality spread over all prompts (the dashed line is the pair rule's gap). Right: the
    quality margin (chosen - rejected) of the DPO pairs."""
    import matplotlib.pyplot as plt

    spreads = [max(map(quality, p.scores)) - min(map(quality, p.scores)) for p in prompts]
    margins = list(dpo["margin"]) if len(dpo) else []
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.hist(spreads, bins=np.arange(-0.5, 13.5, 1), color="#4c72b0")
    left.axvline(min_gap - 0.5, color="black", linestyle="--", label=f"pair rule: spread >= {min_gap:g}")
    left.set_xlabel("max - min quality of a prompt's answers")
    left.set_ylabel("prompts")
    left.legend()
    right.hist(margins, bins=np.arange(-0.5, 13.5, 1), color="#55a868")
    right.set_xlabel("quality margin of the DPO pair (chosen - rejected)")
    right.set_ylabel("pairs")
    fig.suptitle(f"{len(prompts)} prompts, {len(margins)} pairs")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------------------
# The pair viewer


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").resize((192, 192)).save(buffer, format="PNG")
    return buffer.getvalue()


def _scores_line(row: Mapping[str, Any], side: str) -> str:
    return ", ".join(f"{a} {row[f'{side}_{a}']}" for a in ATTRIBUTES) + f" (quality {row[f'{side}_quality']})"


def pair_viewer(dpo, reasoning: Mapping[str, str] | None = None):
    """An ipywidgets browser of DPO pairs: image, question, chosen and rejected answers with their scores, and
    the judge's reasoning when given ({prompt_id: text})."""
    import html

    import ipywidgets as widgets

    if len(dpo) == 0:
        return widgets.HTML("<i>No DPO pairs to show.</i>")
    slider = widgets.IntSlider(min=0, max=len(dpo) - 1, value=0, description="pair", continuous_update=False)
    image = widgets.Image(format="png", width=192, height=192)
    text = widgets.HTML()

    def show(index: int) -> None:
        row = dpo[int(index)]
        image.value = _png(row["images"][0])
        chosen, rejected = row["chosen"][-1]["content"], row["rejected"][-1]["content"]
        chosen_text = chosen if isinstance(chosen, str) else " ".join(part.get("text", "") for part in chosen)
        rejected_text = rejected if isinstance(rejected, str) else " ".join(part.get("text", "") for part in rejected)
        why = (reasoning or {}).get(row["prompt_id"], "")
        text.value = (
            f"<b>{html.escape(row['prompt_id'])}</b> ({html.escape(row['source'])}, margin {row['margin']:g})<br>"
            f"<b>Question:</b> {html.escape(row['question'])}<br>"
            f"<b style='color:#2a7'>Chosen</b> [{_scores_line(row, 'chosen')}]:<br>{html.escape(chosen_text)}<br>"
            f"<b style='color:#c33'>Rejected</b> [{_scores_line(row, 'rejected')}]:<br>{html.escape(rejected_text)}"
            + (f"<br><details><summary>judge's reasoning</summary>{html.escape(why)}</details>" if why else ""))

    slider.observe(lambda change: show(change["new"]), names="value")
    show(0)
    return widgets.VBox([slider, widgets.HBox([image, text])])


# ------------------------------------------------------------------------------------------------------------
# Datasets


def build_datasets(prompts: Sequence[AnnotatedPrompt], seed: int = 0, min_gap: float = 2,
                   fractions: Sequence[float] = ABLATION_FRACTIONS, judge_sft: bool = False) -> dict[str, Any]:
    """The four training sets (paper §3.4-3.5) and the ablation subsets of §6.2.

    Keys: dpo, rejection_sampling, steerlm, sft (the source's reference answers), with `judge_sft` also sft_judge
    (the judge-written answers: every prompt must have one); dpo_images_25 ... (by image, also for
    rejection_sampling and steerlm, as the paper's data-scaling runs); dpo_flip_25 ... (chosen and rejected
    swapped in that share of pairs).
    """
    out: dict[str, Any] = {
        "dpo": build_dpo_pairs(prompts, min_gap=min_gap, seed=seed),
        "rejection_sampling": build_rejection_sampling(prompts),
        "steerlm": build_steerlm(prompts),
        "sft": build_sft(prompts, source="reference"),
    }
    if judge_sft:
        out["sft_judge"] = build_sft(prompts, source="judge", on_missing="error")
    for base in ("dpo", "rejection_sampling", "steerlm"):
        for fraction in fractions:
            out[f"{base}_images_{round(fraction * 100)}"] = subset_by_image(out[base], fraction, seed=seed)
    for fraction in fractions:
        out[f"dpo_flip_{round(fraction * 100)}"] = flip_labels(out["dpo"], fraction, seed=seed)
    return out


def _kind_of(name: str) -> str:
    for kind in ("rejection_sampling", "steerlm", "sft", "dpo"):
        if name.startswith(kind):
            return kind
    raise ValueError(f"cannot tell the kind of dataset {name!r}")


def signal_description(spread: Mapping[str, Any], report: Mapping[str, Any] | None) -> str:
    """Markdown for a dataset card: the within-prompt spread and, for DPO, what the pairs carry."""
    lines = ["## Signal in the sampled answers", "",
             f"- prompts annotated: {spread['n_prompts']}",
             f"- within-prompt quality spread (max - min, 0-12): mean {spread['spread_mean']:.2f}, median "
             f"{spread['spread_median']:.1f}; mean per-prompt standard deviation {spread['quality_std_mean']:.2f}",
             f"- share of prompts with a spread >= {spread['min_gap']:g} (they give a pair): "
             f"{spread['share_with_pair']:.1%}"]
    if report is not None:
        lines += [f"- within-prompt correlation of quality and length: "
                  f"{report['quality_length_corr_within_prompt']:.3f} (> 0: the judge rewards length)",
                  f"- chosen vs rejected: quality {report['chosen']['quality']:.2f} vs "
                  f"{report['rejected']['quality']:.2f}, length {report['chosen']['length_words']:.1f} vs "
                  f"{report['rejected']['length_words']:.1f} words; chosen longer in "
                  f"{report['share_chosen_longer']:.1%} of pairs"]
    return "\n".join(lines)


def save_datasets(datasets: Mapping[str, Any], root: str | Path, prompts: Sequence[AnnotatedPrompt], *,
                  judge_id: str, seed: int, min_gap: float = 2, sampling: Mapping[str, Any] | None = None
                  ) -> dict[str, Path]:
    """Save every dataset under root/NAME (replacing an older copy) with a dataset card that records the judge,
    the filters, the counts, the within-prompt spread and, for DPO sets, pair_signal_report."""
    root = Path(root)
    spread = spread_summary(prompts, min_gap)
    prompt_hash = judge_prompt_hash(judge_id)
    paths = {}
    for name, ds in datasets.items():
        kind = _kind_of(name)
        report = pair_signal_report(prompts, ds) if kind == "dpo" else None
        filters = {"min_gap": min_gap, "pair_rule": "paper"} if kind == "dpo" else {}
        filters.update({f"sampling_{key}": value for key, value in (sampling or {}).items()})
        card = dataset_card(ds, kind=kind, judge_model=judge_id, filters=filters, seed=seed,
                            prompt_hash=writer_prompt_hash() if name == "sft_judge" else prompt_hash,
                            counts={"prompts_annotated": len(prompts), "rows": len(ds)},
                            title=f"mmalign {name}", description=signal_description(spread, report))
        path = root / name
        if path.exists():
            shutil.rmtree(path)
        paths[name] = save_dataset(ds, path, card)
    return paths


# ------------------------------------------------------------------------------------------------------------
# results.csv


def result_rows(spread: Mapping[str, Any], report: Mapping[str, Any], *, notebook: str, model: str, judge_id: str,
                seed: int, profile: str, protocol: str, by_family: pd.DataFrame | None = None,
                demands: pd.DataFrame | None = None) -> list[ResultRow]:
    """The measurements of the annotation step as results.csv rows (benchmark "annotation"); with `by_family`
    (`pair_signal_by_group`'s table) also the length signal per question family, split "family=NAME"; with
    `demands` (`demand_compliance`'s table) the compliance per answer-format demand, split "demand=KIND"."""
    def row(metric: str, value: float, n: int, split: str = "all") -> ResultRow:
        return ResultRow(notebook=notebook, model=model, benchmark="annotation", split=split, metric=metric,
                         value=float(value), n=int(n), seed=seed, profile=profile, protocol=protocol, judge=judge_id)

    n_prompts, n_pairs = spread["n_prompts"], report["n_pairs"]
    rows = [row("quality_spread_mean", spread["spread_mean"], n_prompts),
            row("quality_spread_median", spread["spread_median"], n_prompts),
            row("share_prompts_with_pair", spread["share_with_pair"], n_prompts),
            row("quality_length_corr_within_prompt", report["quality_length_corr_within_prompt"], n_prompts),
            row("n_pairs", n_pairs, n_prompts),
            row("share_chosen_longer", report["share_chosen_longer"], n_pairs)]
    for side in ("chosen", "rejected"):
        for name, value in report[side].items():
            rows.append(row(f"{side}_{name}_mean", value, n_pairs))
    for source, stats in spread["by_source"].items():
        rows.append(row("quality_spread_mean", stats["spread_mean"], stats["n_prompts"], split=source))
        rows.append(row("share_prompts_with_pair", stats["share_with_pair"], stats["n_prompts"], split=source))
    for family, stats in (by_family.iterrows() if by_family is not None else ()):
        split = f"family={family}"
        rows.append(row("n_pairs", stats["pairs"], stats["prompts"], split=split))
        rows.append(row("quality_length_corr_within_prompt", stats["quality_length_corr_within_prompt"],
                        stats["prompts"], split=split))
        if stats["pairs"]:
            # metric names as in the all-prompts rows above
            for metric, column in (("share_chosen_longer", "share_chosen_longer"),
                                   ("chosen_length_words_mean", "chosen_words"),
                                   ("rejected_length_words_mean", "rejected_words")):
                rows.append(row(metric, stats[column], stats["pairs"], split=split))
    for kind, stats in (demands.iterrows() if demands is not None else ()):
        split = f"demand={kind}"
        rows.append(row("share_answers_honouring", stats["share_answers_honouring"], stats["prompts"], split=split))
        rows.append(row("share_prompts_mixed", stats["share_prompts_mixed"], stats["prompts"], split=split))
        if stats["pairs"]:
            rows.append(row("share_pairs_chosen_only_honours", stats["share_pairs_chosen_only_honours"],
                            stats["pairs"], split=split))
            rows.append(row("share_pairs_rejected_only_honours", stats["share_pairs_rejected_only_honours"],
                            stats["pairs"], split=split))
    return rows


def conclusion(spread: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    """Plain sentences on whether the pairs carry signal, from this run's numbers."""
    gap = report["chosen"]["quality"] - report["rejected"]["quality"]
    length_gap = report["chosen"]["length_words"] - report["rejected"]["length_words"]
    parts = [f"{spread['share_with_pair']:.0%} of {spread['n_prompts']} prompts have answers whose quality differs "
             f"by at least {spread['min_gap']:g} points, giving {report['n_pairs']} DPO pairs."]
    if report["n_pairs"]:
        biggest = max(ATTRIBUTES, key=lambda a: report["chosen"][a] - report["rejected"][a])
        parts.append(f"Chosen answers score {gap:.1f} quality points above rejected ones (of 12); the largest "
                     f"attribute gap is {biggest} ({report['chosen'][biggest]:.2f} vs "
                     f"{report['rejected'][biggest]:.2f}).")
        parts.append(f"Chosen answers are {abs(length_gap):.1f} words {'longer' if length_gap >= 0 else 'shorter'} "
                     f"on average (chosen longer in {report['share_chosen_longer']:.0%} of pairs); the within-prompt "
                     f"correlation of quality and length is {report['quality_length_corr_within_prompt']:.2f}.")
    if spread["share_with_pair"] < 0.2:
        parts.append("Few prompts give pairs: the sampled answers barely differ in quality, so DPO has little to "
                     "act on (raise the temperature, or check that the model's answers vary).")
    return " ".join(parts)


__all__ = ["ABLATION_FRACTIONS", "PAPER_FUNNEL", "annotation_store_dir", "answers_frame", "attribute_correlations",
           "build_datasets", "conclusion", "funnel_table", "judge_calibration", "judge_prompt_hash",
           "pair_difference_correlations", "pair_signal_by_group",
           "pair_viewer", "plot_correlation_heatmap", "plot_margins", "plot_score_histograms", "resolve_judge_spec",
           "result_rows", "samples_file_name", "save_datasets", "score_difference_correlations", "score_summary",
           "signal_description", "signal_table", "spread_summary", "store_folder_name"]
