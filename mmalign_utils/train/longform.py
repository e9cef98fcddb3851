"""Long-form answers in natural language, written the way LLaVA wrote its instruction data.

LLaVA asked a text-only LLM (GPT-4) to write detailed descriptions, conversations and reasoning answers from a
textual rendering of the image (captions and boxes). We do the same with a text-only LLM (SmolLM2 itself in the
toy profile, or any chat model): it sees the scene's facts and a plain, correct answer and rewrites the answer in
its own words. Every rewrite is checked against the scene graph; one that invents an object, gets an attribute
wrong, drops objects or slips into talk about itself is rejected and the plain answer is kept. The share of
natural (LLM-written) answers is reported, so nobody mistakes templates for natural data.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from mmalign_utils.generate import Conversation, GenerationSettings, generate
from mmalign_utils.world.grounding import extract_mentions, ground
from mmalign_utils.world.vocab import COLORS as _COLOURS

WRITER_SYSTEM = ("You are a careful writer. You describe pictures for people who cannot see them, using only the "
                 "facts you are given.")
WRITER_PROMPT = (
    "Picture facts: {facts}\n\nQuestion about the picture: {question}\nPlain answer: {answer}\n\n"
    "Rewrite the plain answer so it sounds natural and friendly, as a helpful assistant looking at the picture "
    "would say it. Keep every fact exactly; do not add objects, colours or positions."
)
_META = re.compile(r"\b(i'm|i am|as an ai|assistant|smollm|plain answer|rewrite|facts?)\b", re.IGNORECASE)


@dataclass
class WrittenAnswer:
    text: str
    natural: bool  # True: the LLM's rewrite passed the checks; False: the plain answer was kept
    reason: str = ""  # why a rewrite was rejected


def check_rewrite(rewrite: str, plain: str, scene, kind: str) -> str:
    """'' if the rewrite is acceptable, else the reason it is not."""
    if len(rewrite.split()) < 0.6 * len(plain.split()) or len(rewrite.split()) > 3 * len(plain.split()) + 20:
        return "length"
    if _META.search(rewrite):
        return "meta talk"
    if kind == "shapes":
        report = ground(rewrite, scene)
        if report.hallucinated:
            return "hallucinated object"
        if report.wrong_attributes or report.false_negations or any(not c.correct for c in report.number_claims):
            return "wrong attribute or number"
        plain_covered = set(map(str, ground(plain, scene).objects_covered))
        if not plain_covered <= set(map(str, report.objects_covered)):
            return "dropped objects"
    else:  # charts: every colour named must be a colour of the chart, and all of the plain answer's kept
        plain_colours = {m.color for m in extract_mentions(plain) if m.color}
        colours = {w for w in re.findall(r"[a-z]+", rewrite.lower())}
        if not plain_colours <= colours:
            return "dropped colours"
        chart_colours = {series.color for series in scene.series}
        named = {c for c in colours if c in _COLOURS}
        if chart_colours and not named <= chart_colours:
            return "wrong colour"
    return ""


def write_longform(jobs: list[tuple[str, str, str, object, str]], writer_model, writer_tokenizer,
                   temperature: float = 0.7, max_new_tokens: int = 120, batch_size: int = 16,
                   seed: int = 0, progress: bool = True, cache_path: str | Path | None = None) -> list[WrittenAnswer]:
    """Rewrite plain answers. Each job is (facts, question, plain_answer, scene_or_chart, kind).

    With `cache_path`, raw rewrites are appended to a JSONL file chunk by chunk, keyed by a hash of the writer
    prompt and the sampling settings, so an interrupted run resumes and a rerun with the same data writes nothing.
    """
    prompts = [WRITER_PROMPT.format(facts=f, question=q, answer=a) for f, q, a, _, _ in jobs]
    settings_key = f"{temperature}|{max_new_tokens}|{seed}"
    keys = [hashlib.sha256(f"{settings_key}|{p}".encode()).hexdigest()[:24] for p in prompts]
    done: dict[str, str] = {}
    if cache_path is not None and Path(cache_path).exists():
        for line in Path(cache_path).read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done[rec["key"]] = rec["rewrite"]
    todo = [i for i, k in enumerate(keys) if k not in done]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=0.9,
                                  batch_size=batch_size, seed=seed)
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="writing long-form answers", disable=not progress)
    chunk = batch_size * 4
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        convs = [Conversation.user(prompts[i], system=WRITER_SYSTEM) for i in part]
        rewrites = generate(writer_model, writer_tokenizer, convs, settings, progress=False)
        for i, text in zip(part, rewrites):
            done[keys[i]] = text
        if cache_path is not None:
            with open(cache_path, "a") as f:
                for i, text in zip(part, rewrites):
                    f.write(json.dumps({"key": keys[i], "rewrite": text}) + "\n")
                f.flush()
                os.fsync(f.fileno())
        bar.update(len(part))
    bar.close()
    out = []
    for (_, _, plain, scene, kind), key in zip(jobs, keys, strict=True):
        rewrite = done[key]
        reason = check_rewrite(rewrite, plain, scene, kind)
        out.append(WrittenAnswer(text=rewrite, natural=True) if not reason
                   else WrittenAnswer(text=plain, natural=False, reason=reason))
    return out
