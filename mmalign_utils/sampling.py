"""Prompt sets and on-policy self-sampling (paper §3.1-§3.2): k answers per image-question prompt, resumable.

Prompt sets:
  shapesworld_prompts(n)     toy profile: LRV-Instruct-like questions about held-out ShapesWorld scenes (yes/no
                             existence incl. absent objects, "describe the X" with and without an X, descriptions,
                             reasoning, relations, counts) and SciGraphQA-like chart questions, half and half as in
                             the paper's 2,562 + 2,522 prompts.
  load_lrv_instruct(...)     paper profile: the user's LRV-Instruct filter_cap JSON, sliced 10,000-13,000 as the paper.
  load_scigraphqa(...)       paper profile: the user's SciGraphQA question JSONL (LLaVA question-file lines).

Sampling:
  self_sample(model, processor, prompts, k=4, temperature=1.2, out_path=...) draws k answers per prompt with
  `generate.sample_k` (the prompt and image are encoded once per prompt, not k times) and appends one JSON line
  per prompt to `out_path` as each batch finishes; a rerun skips the prompts already there.

Glue to the annotator and the dataset builders:
  to_annotation_items(samples, prompts)  -> items for `annotate()` (with the scene JSON the oracle needs)
  to_annotated_prompts(samples, annotations, prompts) -> list[preference.AnnotatedPrompt]
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmalign_utils.world.datasets import scene_seed
from mmalign_utils.world.qa import CHART_FAMILIES as QA_CHART_FAMILIES
from mmalign_utils.world.qa import SHAPES_FAMILIES, QAItem, make_items

# Scene indices of the held-out split used for preference prompts. Evaluation sets take indices from 0, so
# starting far above keeps the preference images apart from them.
PROMPT_SCENE_OFFSET = 5_000_000
IMAGE_TOKEN = "<image>"

# The mix of the LRV-like half. "lrv_instruction" is the existence family's LRV subtype ("Describe the X", where
# X is present, absent, or present with the wrong size): LRV-Instruct's positive and negative instructions.
LRV_MIX: dict[str, float] = {"existence": 0.25, "lrv_instruction": 0.2, "describe": 0.2, "reasoning": 0.15,
                             "relation": 0.1, "count": 0.1}
# The SciGraphQA-like half: single questions about a chart, and chart descriptions.
CHART_MIX: dict[str, float] = {"chart": 0.6, "describe": 0.4}
# What the notebook's `lrv_mix` / `chart_mix` parameters may name (`parse_mix`): single-question families (a
# prompt is one question; the multi-turn "conversation" family has no one-question form the oracle can rate).
LRV_MIX_FAMILIES: tuple[str, ...] = (*(f for f in SHAPES_FAMILIES if f != "conversation"), "lrv_instruction")
CHART_MIX_FAMILIES: tuple[str, ...] = tuple(f for f in QA_CHART_FAMILIES if f != "conversation")


@dataclass
class SamplingPrompt:
    """One image-question prompt to sample answers for.

    ShapesWorld prompts carry their QAItem (scene graph, family, reference answers), so the oracle can rate the
    answers and the image is re-rendered on demand; prompts from user files carry an image path.
    """

    prompt_id: str
    question: str
    source: str  # "lrv" | "scigraphqa"
    image_path: str | None = None
    qa_item: QAItem | None = None
    reference_answer: str | None = None
    image_id: str = ""

    def __post_init__(self) -> None:
        if (self.image_path is None) == (self.qa_item is None):
            raise ValueError(f"prompt {self.prompt_id!r}: give exactly one of image_path and qa_item")
        if IMAGE_TOKEN in self.question:
            raise ValueError(f"prompt {self.prompt_id!r}: the question contains {IMAGE_TOKEN!r}; strip it (the image "
                             "is passed separately)")
        if not self.image_id:
            item = self.qa_item
            self.image_id = self.image_path if item is None else f"{item.kind}-{item.scene_seed}"

    def load_image(self, image_size: int = 96):
        """The prompt's image as an RGB PIL image (ShapesWorld images are rendered at `image_size`)."""
        if self.qa_item is not None:
            from mmalign_utils.world.datasets import render_item

            return render_item(self.qa_item, image_size)
        from PIL import Image

        with Image.open(self.image_path) as image:
            return image.convert("RGB")

    def oracle_fields(self) -> dict[str, Any]:
        """What the ShapesWorld oracle needs (empty for prompts from user files, which only an AI judge rates)."""
        if self.qa_item is None:
            return {}
        from mmalign_utils.judges.oracle import item_fields

        return item_fields(self.qa_item)

    @property
    def family(self) -> str:
        return self.qa_item.family if self.qa_item is not None else ""


# ------------------------------------------------------------------------------------------------------------
# Prompt sets


def parse_mix(text: str, default: Mapping[str, float], allowed: Sequence[str]) -> dict[str, float]:
    """A question mix from a papermill-friendly string, "describe=0.6,lrv_instruction=0.4" (weights need not sum
    to 1); an empty string gives `default`. Names must be in `allowed` (the scene families plus "lrv_instruction",
    or the chart families)."""
    if not text.strip():
        return dict(default)
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"question mix {text!r}: write name=weight pairs separated by commas, "
                             f"e.g. 'describe=0.6,reasoning=0.4' (bad part {part.strip()!r})")
        if name not in allowed:
            raise ValueError(f"question mix {text!r}: unknown family {name!r}; choose from {sorted(allowed)}")
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"question mix {text!r}: the weight of {name!r} is not a number ({weight.strip()!r})") \
                from None
        if value < 0 or name in mix:
            raise ValueError(f"question mix {text!r}: {name!r} has a negative weight or appears twice")
        mix[name] = value
    if sum(mix.values()) <= 0:
        raise ValueError(f"question mix {text!r}: the weights sum to 0")
    return mix


def _draw(rng: random.Random, mix: Mapping[str, float]) -> str:
    names = list(mix)
    return rng.choices(names, weights=[mix[n] for n in names])[0]


def _lrv_instruction(scene, rng: random.Random) -> QAItem:
    """An existence item of the LRV subtype ("Describe the X ..."); other existence items if the scene allows none."""
    fallback = None
    for _ in range(30):
        item = make_items(scene, "existence", rng, n=1)[0]
        if item.extra.get("subtype") == "lrv":
            return item
        fallback = fallback or item
    return fallback


def shapesworld_prompts(n_prompts: int, seed: int = 0, chart_share: float = 0.5,
                        lrv_mix: Mapping[str, float] = LRV_MIX,
                        chart_mix: Mapping[str, float] = CHART_MIX,
                        demand_share: float = 0.0) -> list[SamplingPrompt]:
    """`n_prompts` prompts, one per held-out image: a share `chart_share` of charts (SciGraphQA-like, source
    "scigraphqa"), the rest shapes scenes with LRV-Instruct-like questions (source "lrv"). Deterministic in seed.

    Scenes come from the held-out split at indices PROMPT_SCENE_OFFSET + i, so they are never training scenes of
    the toy LLaVA nor the images of the evaluation sets.

    demand_share: the share of prompts whose question ends with an answer-format demand of LLaVA-1.5's kinds
    (`world.answer_format`: a word or phrase, one sentence, the option's letter, N sentences of detail); the
    prompt id then ends with the demand's kind. Demands are drawn from their own random stream, so the questions
    and images are the same for every share.
    """
    from mmalign_utils.world.answer_format import draw_demand
    from mmalign_utils.world.charts import generate_chart
    from mmalign_utils.world.scenes import generate_scene

    if n_prompts < 1:
        raise ValueError(f"n_prompts must be >= 1, got {n_prompts}")
    rng = random.Random(f"shapesworld-prompts:{seed}")
    demand_rng = random.Random(f"shapesworld-demands:{seed}")
    prompts: list[SamplingPrompt] = []
    for i in range(n_prompts):
        visual_seed = scene_seed(seed, "heldout", PROMPT_SCENE_OFFSET + i)
        if rng.random() < chart_share:
            item = make_items(generate_chart(visual_seed), _draw(rng, chart_mix), rng, n=1)[0]
            source = "scigraphqa"
        else:
            scene = generate_scene(visual_seed)
            family = _draw(rng, lrv_mix)
            item = _lrv_instruction(scene, rng) if family == "lrv_instruction" else make_items(scene, family, rng)[0]
            source = "lrv"
        item = draw_demand(item, demand_rng, demand_share)
        demand = item.extra.get("answer_format", {}).get("kind")
        prompt_id = f"sw-{seed}-{i:06d}-{item.family}" + (f"-{demand}" if demand else "")
        prompts.append(SamplingPrompt(prompt_id=prompt_id, question=item.question,
                                      source=source, qa_item=item, reference_answer=item.detailed_answer))
    return prompts


def _strip_image_token(text: str) -> str:
    return text.replace(f"{IMAGE_TOKEN}\n", "").replace(IMAGE_TOKEN, "").strip()


def _check_images(prompts: list[SamplingPrompt], path: Path, image_root: Path) -> None:
    missing = [p.image_path for p in prompts if not Path(p.image_path).is_file()]
    if missing:
        shown = "\n  ".join(missing[:5])
        raise FileNotFoundError(f"{len(missing)} of {len(prompts)} images named in {path} are not under {image_root}; "
                                f"first:\n  {shown}\nDownload the images (see paper-recipe.md §7) or fix image_root.")


def load_lrv_instruct(path: str | Path, image_root: str | Path, start: int | None = 10_000,
                      stop: int | None = 13_000, check_images: bool = True) -> list[SamplingPrompt]:
    """LRV-Instruct prompts from the user's `filter_cap*.json` (a list of {"image_id", "question", "answer"}, or
    {"annotations": [...]}); images are `{image_root}/{image_id}.jpg` (Visual Genome ids).

    The paper took records 10,000-13,000 of filter_cap.json (3,000 prompts before cleaning). For a file that is
    already that slice (`lrv_filter_cap_10kto13k.json`) pass start=None, stop=None.
    """
    path, image_root = Path(path), Path(image_root)
    if not path.is_file():
        raise FileNotFoundError(f"LRV-Instruct file {path} does not exist; download filter_cap.json from the "
                                "LRV-Instruction repository (github.com/FuxiaoLiu/LRV-Instruction)")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    records = data.get("annotations") if isinstance(data, dict) else data
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records or {{'annotations': [...]}}, got "
                         f"{type(data).__name__} with keys {sorted(data)[:5] if isinstance(data, dict) else ''}")
    first = start or 0
    if first >= len(records):
        raise ValueError(f"{path} has {len(records)} records, fewer than start={first}. The paper's slice is "
                         "10000-13000 of the full filter_cap.json; for a file already sliced pass start=None, "
                         "stop=None")
    prompts = []
    for index in range(first, len(records) if stop is None else min(stop, len(records))):
        record = records[index]
        if not isinstance(record, dict) or not record.get("image_id") or not str(record.get("question", "")).strip():
            raise ValueError(f"{path}, record {index}: needs non-empty 'image_id' and 'question' (got "
                             f"{sorted(record) if isinstance(record, dict) else type(record).__name__})")
        image_id = str(record["image_id"])
        image = image_root / (image_id if Path(image_id).suffix else f"{image_id}.jpg")
        prompts.append(SamplingPrompt(prompt_id=f"lrv-{index}", question=_strip_image_token(str(record["question"])),
                                      source="lrv", image_path=str(image), image_id=f"vg/{image_id}",
                                      reference_answer=record.get("answer")))
    if check_images:
        _check_images(prompts, path, image_root)
    return prompts


def load_scigraphqa(path: str | Path, image_root: str | Path, limit: int | None = 3_000,
                    check_images: bool = True) -> list[SamplingPrompt]:
    """SciGraphQA prompts from the user's question JSONL (the paper: `deplot_test_for_llava_inference.jsonl`, 3,000
    test items). Each line is a LLaVA question-file record: {"question_id", "image", "text"} ("question" or a
    "conversations" list also work). Images are looked up under `image_root` and then under `image_root/scigraph`
    (the paper's layout)."""
    path, image_root = Path(path), Path(image_root)
    if not path.is_file():
        raise FileNotFoundError(f"SciGraphQA file {path} does not exist; make it from the SciGraphQA test split "
                                "(alexshengzhili/SciGraphQA-295K-train) as a LLaVA question JSONL")
    prompts = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {line_number}: not JSON ({error})") from None
            question = record.get("text") or record.get("question")
            reference = record.get("answer")
            turns = record.get("conversations")
            if not question and isinstance(turns, list) and turns:
                question = turns[0].get("value")
                reference = reference or (turns[1].get("value") if len(turns) > 1 else None)
            if not record.get("image") or not question:
                raise ValueError(f"{path}, line {line_number}: needs 'image' and a question in 'text', 'question' "
                                 f"or 'conversations' (keys: {sorted(record)})")
            image = image_root / record["image"]
            if not image.is_file() and (image_root / "scigraph" / record["image"]).is_file():
                image = image_root / "scigraph" / record["image"]
            qid = record.get("question_id", record.get("id", line_number))
            prompts.append(SamplingPrompt(prompt_id=f"scigraphqa-{qid}", question=_strip_image_token(str(question)),
                                          source="scigraphqa", image_path=str(image),
                                          image_id=f"scigraph/{record['image']}", reference_answer=reference))
            if limit is not None and len(prompts) >= limit:
                break
    if check_images:
        _check_images(prompts, path, image_root)
    return prompts


# ------------------------------------------------------------------------------------------------------------
# Self-sampling


SETTING_KEYS = ("k", "temperature", "top_p", "max_new_tokens")


def read_samples(path: str | Path) -> list[dict]:
    """The records of a samples JSONL. A torn last line (the process was killed while writing) is ignored; a bad
    line elsewhere raises ValueError naming it."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines) or all(not rest.strip() for rest in lines[number:]):
                continue  # torn tail: dropped here, truncated by the next self_sample
            raise ValueError(f"{path}, line {number}: not JSON; the file is damaged (delete the line to resume)") \
                from None
    return records


def _drop_torn_tail(path: Path) -> None:
    """Cut an unfinished last line, so appended records start on their own line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(cut)


def _batch_seed(seed: int, prompt_ids: Sequence[str]) -> int:
    digest = hashlib.sha256(f"{seed}|{'|'.join(prompt_ids)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def self_sample(model, processor, prompts: Sequence[SamplingPrompt], k: int = 4, temperature: float = 1.2,
                top_p: float = 1.0, max_new_tokens: int = 256, out_path: str | Path = "samples.jsonl",
                batch_size: int = 8, seed: int = 0, image_size: int = 96, progress: bool = True) -> list[dict]:
    """k sampled answers per prompt (paper: k=4, T=1.2, top-p unset, 1024 new tokens), appended to `out_path`.

    Each batch of `batch_size` prompts goes through `generate.sample_k` (prompt and image encoded once, the KV
    cache repeated k times) with a seed drawn from (seed, the batch's prompt ids), and its records are appended and
    fsynced before the next batch starts. A rerun with the same out_path skips every prompt id already there, so
    a killed run loses at most the batch in flight. The file must hold samples made with the same k, temperature,
    top_p and max_new_tokens (else ValueError).

    Returns the records of `prompts`, in their order: {prompt_id, question, answers: [k strings], answer_tokens:
    [k ints], k, temperature, top_p, max_new_tokens, seed, source, seconds}.
    """
    from mmalign_utils.progress import progress_bar

    from mmalign_utils.generate import Conversation, sample_k

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    settings = {"k": k, "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ids = [p.prompt_id for p in prompts]
    if len(set(ids)) != len(ids):
        duplicated = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"prompt ids must be unique; repeated: {duplicated}")
    existing = read_samples(out_path)
    for record in existing:
        differing = {key: record.get(key) for key in SETTING_KEYS if record.get(key) != settings[key]}
        if differing:
            raise ValueError(f"{out_path} holds samples made with {differing} (prompt {record.get('prompt_id')}), "
                             f"not {settings}; use another out_path for these settings")
    done = {record["prompt_id"]: record for record in existing}
    changed = [p.prompt_id for p in prompts if p.prompt_id in done and done[p.prompt_id]["question"] != p.question]
    if changed:
        raise ValueError(f"{out_path} holds samples for prompt ids {changed[:3]} with other questions than now "
                         f"({len(changed)} in all): the prompt set changed; use another out_path")
    todo = [p for p in prompts if p.prompt_id not in done]
    tokenizer = getattr(processor, "tokenizer", processor)
    bar = progress_bar(total=len(prompts), initial=len(prompts) - len(todo), desc=f"sampling k={k}", unit="prompt",
               disable=not progress)
    _drop_torn_tail(out_path)
    with open(out_path, "a", encoding="utf-8") as out:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            conversations = [Conversation.user(p.question, p.load_image(image_size)) for p in batch]
            batch_seed = _batch_seed(seed, [p.prompt_id for p in batch])
            began = time.perf_counter()
            answers = sample_k(model, processor, conversations, k=k, temperature=temperature, top_p=top_p,
                               max_new_tokens=max_new_tokens, batch_size=len(batch), seed=batch_seed, progress=False)
            seconds = (time.perf_counter() - began) / len(batch)
            for prompt, prompt_answers in zip(batch, answers):
                record = {"prompt_id": prompt.prompt_id, "question": prompt.question, "answers": prompt_answers,
                          "answer_tokens": [len(tokenizer(a, add_special_tokens=False)["input_ids"])
                                            for a in prompt_answers],
                          **settings, "seed": batch_seed, "source": prompt.source, "seconds": round(seconds, 3)}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                done[prompt.prompt_id] = record
            out.flush()
            os.fsync(out.fileno())
            bar.update(len(batch))
    bar.close()
    return [done[p.prompt_id] for p in prompts]


# ------------------------------------------------------------------------------------------------------------
# Glue: samples -> annotation items -> AnnotatedPrompt


def _prompt_index(prompts: Sequence[SamplingPrompt]) -> dict[str, SamplingPrompt]:
    return {p.prompt_id: p for p in prompts}


def to_annotation_items(samples: Sequence[Mapping[str, Any]], prompts: Sequence[SamplingPrompt],
                        image_size: int = 96) -> list[dict]:
    """Items for `annotate()`: {item_id, image, question, answers, source, image_id} plus, for ShapesWorld
    prompts, the oracle's fields (family, kind, scene_json, short_answer, label, negative_strategy, qa_extra)."""
    index = _prompt_index(prompts)
    items = []
    for record in samples:
        prompt = index.get(record["prompt_id"])
        if prompt is None:
            raise KeyError(f"sample {record['prompt_id']!r} has no prompt among the {len(prompts)} given; pass the "
                           "prompt set the samples were drawn from")
        image = prompt.image_path if prompt.image_path is not None else prompt.load_image(image_size)
        items.append({"item_id": prompt.prompt_id, "image": image, "question": prompt.question,
                      "answers": list(record["answers"]), "source": prompt.source, "image_id": prompt.image_id,
                      **prompt.oracle_fields()})
    return items


def to_annotated_prompts(samples: Sequence[Mapping[str, Any]], annotations: Sequence[Mapping[str, Any]],
                         prompts: Sequence[SamplingPrompt], image_size: int = 96,
                         judge_answers: Mapping[str, str] | None = None) -> list:
    """`preference.AnnotatedPrompt`s for every sampled prompt that was annotated (in sample order).

    annotations: `annotate.load_annotations(out_dir)` rows. Prompts without an annotation (quarantined, or
    failed in the last run) are left out with a warning that counts them; the reference answer is the source
    data's (ShapesWorld: the templated detailed answer). `judge_answers` ({prompt_id: text}, from
    `annotate.write_answers`) fills `judge_answer` for the SFT set with judge-written answers.
    """
    from mmalign_utils.preference import ATTRIBUTES, AnnotatedPrompt

    index = _prompt_index(prompts)
    scores_of = {str(row["item_id"]): row["scores"] for row in annotations}
    out, missing = [], []
    for record in samples:
        prompt = index.get(record["prompt_id"])
        if prompt is None:
            raise KeyError(f"sample {record['prompt_id']!r} has no prompt among the {len(prompts)} given")
        scores = scores_of.get(prompt.prompt_id)
        if scores is None:
            missing.append(prompt.prompt_id)
            continue
        if len(scores) != len(record["answers"]):
            raise ValueError(f"prompt {prompt.prompt_id!r}: {len(record['answers'])} answers but {len(scores)} "
                             "scores; the annotation was made for other samples (use a fresh annotation folder)")
        image = prompt.image_path if prompt.image_path is not None else prompt.load_image(image_size)
        out.append(AnnotatedPrompt(
            prompt_id=prompt.prompt_id, image=image, question=prompt.question, answers=list(record["answers"]),
            scores=[{a: int(s[a]) for a in ATTRIBUTES} for s in scores], reference_answer=prompt.reference_answer,
            judge_answer=(judge_answers or {}).get(prompt.prompt_id), source=prompt.source, image_id=prompt.image_id))
    if missing:
        warnings.warn(f"{len(missing)} of {len(samples)} sampled prompts have no annotation and are left out "
                      f"(first: {missing[:5]}); see annotate.load_quarantine", stacklevel=2)
    return out


__all__ = ["CHART_MIX", "CHART_MIX_FAMILIES", "LRV_MIX", "LRV_MIX_FAMILIES", "PROMPT_SCENE_OFFSET",
           "SamplingPrompt", "load_lrv_instruct", "load_scigraphqa", "parse_mix", "read_samples", "self_sample",
           "shapesworld_prompts", "to_annotated_prompts", "to_annotation_items"]
