"""Text-only conversations for the stage-2 mix: the toy's ShareGPT.

LLaVA-1.5's 665k instruction mix keeps about 40k text-only ShareGPT conversations (about 6%) beside the visual
data, to hold on to the language model's conversational ability. The toy needs the same: a stage 2 long enough to
teach SmolLM2 to read image tokens (800 steps) turned it, without text conversations, into a model that answers
"Plan a birthday party" with "There is no seven-year-old." and talks about shapes in 42% of its text answers
(docs/toy_llava.md), a collapse the paper's LLaVA does not show.

ShareGPT holds users' requests answered by a strong chat model. Offline the only chat model is SmolLM2 itself,
so its own answers (sampled, only those that finished) stand in; in the paper profile LLaVA-1.5's own mix
already holds ShareGPT. The requests are built here from task templates and everyday topics: plain requests with
no checkable constraints, and no topic of the held-out text suite, so that the mix cannot teach the evaluation.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from mmalign_utils.generate import Conversation, GenerationSettings, generate
from mmalign_utils.progress import progress_bar
from mmalign_utils.train.writer_cache import append_cache, load_cache

# Request shapes seen in chat logs: explain, advise, list, compare, write, plan, define, opinion.
TASKS = (
    "Explain {t} in simple terms.",
    "What should a beginner know about {t}?",
    "Give me some practical tips about {t}.",
    "Why do people care about {t}?",
    "Write a short paragraph about {t}.",
    "What are the main advantages and disadvantages of {t}?",
    "Tell me something interesting about {t}.",
    "How would you describe {t} to a friend who has never heard of it?",
    "What are common mistakes people make with {t}?",
    "Can you help me understand {t}?",
    "Write a few sentences that could open a blog post about {t}.",
    "What is the history of {t}, briefly?",
    "How can someone get better at {t}?",
    "Summarize the key ideas behind {t}.",
    "What questions should I ask before starting with {t}?",
)

# Everyday topics; any that a held-out text-suite prompt mentions is dropped by text_instructions().
TOPICS = (
    "learning a second language", "keeping houseplants alive", "riding a bicycle in a city", "composting",
    "saving money on groceries", "public libraries", "board games", "baking bread", "bird watching",
    "writing a cover letter", "camping in the mountains", "recycling plastic", "learning to play the guitar",
    "time zones", "the invention of the printing press", "electric cars", "solar panels", "chess openings",
    "making a good cup of tea", "moving to a new city", "online privacy", "volunteering", "podcasts",
    "running a marathon", "keeping a journal", "the water cycle", "honey bees", "origami", "photography at night",
    "learning to swim", "fixing a flat tire", "the metric system", "museums", "knitting", "group projects at school",
    "public speaking", "remote work", "train travel", "the history of jazz", "making friends as an adult",
    "taking care of a puppy", "minimalism", "spreadsheets", "bread mould", "wind energy", "hiking safety",
    "reading poetry", "the moon's phases", "volcanoes", "tides", "map reading", "first aid kits", "rainforests",
    "sign language", "street food", "the olympic games", "coral reefs", "a healthy breakfast", "sleep habits",
    "video calls with family", "painting with watercolours", "growing tomatoes", "stargazing", "typing faster",
    "the human heart", "earthquakes", "ancient Egypt", "passwords", "carpooling", "thunderstorms", "penguins",
    "learning to cook rice", "job interviews", "birthdays around the world", "paper money", "lighthouses",
)


def _heldout_text() -> str:
    path = Path(__file__).resolve().parents[1] / "textsuite" / "prompts.jsonl"
    return " ".join(json.loads(line)["prompt"].lower() for line in path.read_text().splitlines() if line.strip())


def text_instructions(n: int, seed: int = 0) -> list[str]:
    """`n` distinct text requests (template x topic), drawn reproducibly; topics a held-out prompt mentions are
    left out."""
    heldout = _heldout_text()
    topics = [t for t in TOPICS if t.lower() not in heldout]
    pool = [task.format(t=topic) for topic in topics for task in TASKS]
    if n > len(pool):
        raise ValueError(f"asked for {n} text instructions; the template pool holds {len(pool)}")
    return random.Random(seed).sample(pool, n)


@dataclass
class TextAnswer:
    instruction: str
    answer: str
    finished: bool  # the writer stopped on its own (not cut at max_new_tokens)


def write_text_answers(instructions: list[str], model, tokenizer, temperature: float = 0.7,
                       max_new_tokens: int = 200, batch_size: int = 16, seed: int = 0, progress: bool = True,
                       cache_path: str | Path | None = None) -> list[TextAnswer]:
    """The chat model's answer to each instruction (sampled, top-p 0.9). With `cache_path`, answers are appended
    to a JSONL file chunk by chunk (fsync'd), keyed by instruction and settings: a rerun writes nothing twice."""
    settings_key = f"{temperature}|{max_new_tokens}|{seed}"
    key_of = {q: hashlib.sha256(f"{settings_key}|{q}".encode()).hexdigest()[:24] for q in instructions}
    done = load_cache(cache_path)
    todo = [q for q in dict.fromkeys(instructions) if key_of[q] not in done]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=0.9,
                                  batch_size=batch_size, seed=seed)
    bar = progress_bar(total=len(set(instructions)), initial=len(set(instructions)) - len(todo),
                       desc="writing text-only answers", disable=not progress)
    chunk = batch_size * 2
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        answers = generate(model, tokenizer, [Conversation.user(q) for q in part], settings, progress=False)
        recs = []
        for q, a in zip(part, answers, strict=True):
            n_tokens = len(tokenizer(a, add_special_tokens=False)["input_ids"])
            recs.append({"key": key_of[q], "instruction": q, "answer": a.strip(),
                         "finished": n_tokens < max_new_tokens - 1})
        for rec in recs:
            done[rec["key"]] = rec
        append_cache(cache_path, recs)
        bar.update(len(part))
    bar.close()
    return [TextAnswer(q, done[key_of[q]]["answer"], done[key_of[q]]["finished"]) for q in instructions]


def training_answer(answer: TextAnswer, min_words: int = 40) -> str | None:
    """The text to train on: a finished answer as it is; a cut one up to its last complete sentence, if that
    leaves at least `min_words` words (Vicuna's ShareGPT data was split at the context length the same way);
    else None. SmolLM2 writes long answers: most of them are cut at 200 new tokens."""
    text = answer.answer.strip()
    if answer.finished:
        return text or None
    ends = [m.end() for m in re.finditer(r"[.!?][\"')\]]*(?=\s|$)", text)]
    if not ends:
        return None
    kept = text[:ends[-1]].strip()
    return kept if len(kept.split()) >= min_words else None
