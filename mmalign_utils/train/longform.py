"""Long-form answers in natural language, written the way LLaVA wrote its instruction data.

LLaVA asked a text-only LLM (GPT-4) to write detailed descriptions, conversations and reasoning answers from a
textual rendering of the image. A 135M model cannot write a faithful paragraph from a scene graph (measured: only
15% of whole-answer rewrites by SmolLM2-135M survived a check against the scene graph; the rest invented objects,
talked about itself or lost facts), but it can say one plain sentence in other words. So the writer works sentence
by sentence: each sentence of the plain, correct answer is rephrased by the text-only LLM (SmolLM2 itself in the
toy profile, any chat model otherwise), and a rephrasing is kept only if it passes the checks below; otherwise
the plain sentence stays. The share of sentences written by the LLM is reported, so nobody mistakes templates for
natural data.

Checks on a rephrased sentence (`check_sentence`):
- one sentence-like line of 0.6x to 2.5x the plain sentence's words (+6), no talk about itself or the task;
- the same "fact words" as the plain sentence: colours, shapes, sizes, numbers, positions, comparisons and
  negations (a closed vocabulary, so the rest of the wording is free);
- for scenes, the grounding checker finds no invented object, wrong attribute or wrong number.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from mmalign_utils.generate import Conversation, GenerationSettings, generate
from mmalign_utils.progress import progress_bar
from mmalign_utils.textsuite import split_sentences
from mmalign_utils.train.writer_cache import append_cache, load_cache
from mmalign_utils.world import vocab
from mmalign_utils.world.grounding import ground
from mmalign_utils.world.lexicon import NUMBER_WORDS, POSITION_WORDS

WRITER_SYSTEM = "You rephrase sentences about a picture. Keep the meaning exactly and say it in other words."
# A few worked examples in the chat itself: a small model follows a demonstrated format better than a description.
WRITER_EXAMPLES = [
    ("The red circle is in the top left corner.", "In the top left corner you can see a red circle."),
    ("There are three objects in the image.", "The image contains three objects."),
    ("The blue bar is the tallest.", "Of all the bars, the blue one is the tallest."),
]
_META = re.compile(r"\b(i'm|i am|as an ai|assistant|smollm|rephrase|rewrite|sentence|original|meaning)\b",
                   re.IGNORECASE)
_COMPARISON = {"tallest", "shortest", "taller", "shorter", "largest", "smallest", "larger", "smaller", "biggest",
               "bigger", "more", "fewer", "most", "fewest", "same", "different", "up", "down", "increase",
               "increases", "decrease", "decreases", "above", "below", "not", "no", "none", "only", "all", "both",
               "neither", "first", "last", "peak", "peaks", "highest", "lowest"}


def _fact_vocabulary() -> dict[str, str]:
    """word -> canonical fact word, over colours, shapes (with synonyms and plurals), sizes, numbers, positions."""
    table: dict[str, str] = {}
    for kind in ("shape", "color", "size"):
        for canonical, synonyms in vocab.SYNONYMS[kind].items():
            for word in (canonical, *synonyms):
                for w in (word, vocab.plural(word)) if kind == "shape" else (word,):
                    if " " not in w:
                        table[w] = canonical
    for word, n in NUMBER_WORDS.items():
        table[word] = str(n)
    for n in range(10):
        table[str(n)] = str(n)
    for w in POSITION_WORDS:
        table[w] = {"centre": "center", "central": "center", "upper": "top", "lower": "bottom"}.get(w, w)
    for w in _COMPARISON:
        table[w] = w
    return table


_FACTS = _fact_vocabulary()


def fact_words(text: str) -> list[str]:
    """The sorted fact words of a text (see the module docstring)."""
    return sorted(_FACTS[w] for w in re.findall(r"[a-z0-9]+", text.lower()) if w in _FACTS)
@dataclass
class WrittenAnswer:
    text: str
    n_sentences: int
    n_natural: int  # sentences whose LLM rephrasing passed the checks (the others are the plain sentences)
    reasons: list[str]  # why the other rephrasings were rejected


def check_sentence(rewrite: str, plain: str, scene, kind: str) -> str:
    """'' if the rephrased sentence is acceptable, else the reason it is not (see the module docstring)."""
    if re.sub(r"\W+", " ", rewrite.lower()).strip() == re.sub(r"\W+", " ", plain.lower()).strip():
        return "copied"
    n_plain, n_new = len(plain.split()), len(rewrite.split())
    if "\n" in rewrite.strip() or not (0.6 * n_plain <= n_new <= 2.5 * n_plain + 6):
        return "length"
    if _META.search(rewrite):
        return "meta talk"
    if fact_words(rewrite) != fact_words(plain):
        return "changed facts"
    if kind == "shapes":
        report = ground(rewrite, scene)
        if report.hallucinated or report.wrong_attributes or report.false_negations \
                or any(not c.correct for c in report.number_claims):
            return "contradicts the scene"
    return ""


def _writer_conversation(sentence: str) -> Conversation:
    messages = [{"role": "system", "content": WRITER_SYSTEM}]
    for plain, said in WRITER_EXAMPLES:
        messages += [{"role": "user", "content": plain}, {"role": "assistant", "content": said}]
    messages.append({"role": "user", "content": sentence})
    return Conversation(messages)


def write_longform(jobs: list[tuple[str, object, str]], writer_model, writer_tokenizer,
                   temperature: float = 0.7, max_new_tokens: int = 60, batch_size: int = 32, n_candidates: int = 2,
                   seed: int = 0, progress: bool = True, cache_path: str | Path | None = None) -> list[WrittenAnswer]:
    """Rephrase plain answers sentence by sentence. Each job is (plain_answer, scene_or_chart, kind).

    Each sentence gets `n_candidates` sampled rephrasings; the first that passes the checks is used.

    With `cache_path`, raw rephrasings are appended to a JSONL file chunk by chunk, keyed by a hash of the
    sentence and the sampling settings, so an interrupted run resumes and a rerun writes nothing twice.
    """
    sentences = [split_sentences(plain) or [plain] for plain, _, _ in jobs]
    unique = sorted({s for sents in sentences for s in sents})
    settings_key = f"{temperature}|{max_new_tokens}|{seed}|{n_candidates}|{WRITER_SYSTEM}|{WRITER_EXAMPLES}"
    key_of = {s: hashlib.sha256(f"{settings_key}|{s}".encode()).hexdigest()[:24] for s in unique}
    done: dict[str, list[str]] = {key: rec["rewrite"] for key, rec in load_cache(cache_path).items()}
    todo = [s for s in unique if key_of[s] not in done]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=0.9,
                                  batch_size=batch_size, seed=seed, num_samples=n_candidates)
    bar = progress_bar(total=len(unique), initial=len(unique) - len(todo), desc="rephrasing long-form sentences",
               disable=not progress)
    chunk = batch_size * 4
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        rewrites = generate(writer_model, writer_tokenizer, [_writer_conversation(s) for s in part], settings,
                            progress=False)
        rewrites = [r if isinstance(r, list) else [r] for r in rewrites]
        for sentence, texts in zip(part, rewrites):
            done[key_of[sentence]] = texts
        append_cache(cache_path, [{"key": key_of[sentence], "sentence": sentence, "rewrite": texts}
                                  for sentence, texts in zip(part, rewrites)])
        bar.update(len(part))
    bar.close()
    out = []
    for (plain, scene, kind), sents in zip(jobs, sentences, strict=True):
        kept, reasons, n_natural = [], [], 0
        for sentence in sents:
            verdicts = [(c.strip(), check_sentence(c.strip(), sentence, scene, kind)) for c in done[key_of[sentence]]]
            passing = [c for c, reason in verdicts if not reason]
            kept.append(passing[0] if passing else sentence)
            n_natural += bool(passing)
            if not passing:
                reasons.append(verdicts[0][1])
        out.append(WrittenAnswer(text=" ".join(kept), n_sentences=len(sents), n_natural=n_natural,
                                 reasons=reasons))
    return out
