"""Our rating guide and the one-request prompt: image + question + all k answers, reasoning first, then JSON.

The five attributes and the 0-4 scale follow HelpSteer (paper §3.3); the wording of the guide is ours. The
paper's prompt was not published, so this is a reconstruction of its shape, not of its text.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mmalign_utils.annotate.schema import ATTRIBUTES, annotation_schema
from mmalign_utils.judges.base import JudgeRequest

RATING_GUIDE = """\
You rate answers written by an AI assistant to a question about an image. Rate each answer on its own against the
image and the question, on five attributes, each an integer from 0 (lowest) to 4 (highest).

helpfulness - How well the answer serves the person who asked.
  4: fully addresses what was asked, in a form they can use directly.
  3: addresses the question with minor gaps or detours.
  2: partly useful; misses a main part of the request or needs work from the reader.
  1: barely useful; mostly off target.
  0: useless, refuses without cause, or answers a different question.

correctness - Whether what the answer states is true of the image and of the world.
  4: every claim is accurate, and nothing needed is left out.
  3: accurate overall, with a small slip or omission that does not mislead.
  2: a mix of right and wrong claims, or an important fact missing.
  1: mostly wrong, or describes things that are not in the image.
  0: entirely wrong or made up.
  Claims about objects, counts, colours, positions or text in the image must be checked against the image.

coherence - How clear and self-consistent the writing is, whatever its truth.
  4: clear, well ordered, no contradictions or repetition.
  3: clear with small awkwardness.
  2: understandable with effort; some disorder, repetition or contradiction.
  1: hard to follow.
  0: incoherent or garbled.

complexity - The expertise needed to write the answer (not whether it is good).
  4: needs deep specialist knowledge.
  3: needs some domain or university-level knowledge.
  2: needs general adult knowledge and some reasoning.
  1: simple language and ideas that a school pupil could produce.
  0: trivial: single words or fragments.

verbosity - How much the answer says compared with what the question calls for (not whether that is good).
  4: far more detail than asked for.
  3: somewhat more than needed.
  2: about the amount asked for.
  1: brief; some expected detail is missing.
  0: extremely terse.

Rules: judge every answer independently (do not rank them against each other; ties are fine), and do not let
length alone raise helpfulness."""

SYSTEM_PROMPT = "You are a careful, impartial annotator of AI assistant answers. You follow the rating guide exactly."

_EXAMPLE = {"reasoning": "Answer 1 ... Answer 2 ...",
            "ratings": [{"answer": 1, **{a: 0 for a in ATTRIBUTES}}]}


def annotation_prompt(question: str, answers: list[str], has_image: bool = True) -> str:
    """The user message: guide, question, numbered answers and the reply instructions."""
    k = len(answers)
    blocks = "\n\n".join(f"[Answer {i}]\n{answer.strip()}\n[End of answer {i}]" for i, answer in enumerate(answers, 1))
    example = json.dumps(_EXAMPLE)
    question_intro = "The question asked about the attached image" if has_image else "The question"
    return (
        f"{RATING_GUIDE}\n\n"
        f"{question_intro}:\n[Question]\n{question.strip()}\n[End of question]\n\n"
        f"The {k} answers to rate:\n\n{blocks}\n\n"
        f"First reason step by step: for each answer, check its claims against "
        f"{'the image and ' if has_image else ''}the question, then "
        f"decide each score using the guide. Then reply with one JSON object: \"reasoning\" holds that step-by-step "
        f"analysis, and \"ratings\" holds exactly {k} objects, one per answer, numbered 1 to {k} in \"answer\", each "
        f"with integer fields {', '.join(ATTRIBUTES)} from 0 to 4. Shape (shortened): {example}"
    )


def build_request(item: Mapping[str, Any], k: int, repeat: int = 0, temperature: float = 0.0,
                  max_tokens: int = 8192) -> JudgeRequest:
    """One JudgeRequest for an item {item_id, image, question, answers, ...}. Extra keys travel in the payload
    (for the ShapesWorld oracle); the prompt itself uses only the image, question and answers."""
    answers = list(item["answers"])
    image = item.get("image")
    extra = {key: value for key, value in item.items() if key not in ("image", "question", "answers")}
    return JudgeRequest(
        messages=[{"role": "system", "content": SYSTEM_PROMPT},
                  {"role": "user",
                   "content": annotation_prompt(item["question"], answers, has_image=image is not None)}],
        images=[image] if image is not None else [],
        temperature=temperature, max_tokens=max_tokens, repeat=repeat,
        response_schema=annotation_schema(k),
        tag=f"annotate:{item['item_id']}",
        payload={"task": "helpsteer_annotation", "item_id": str(item["item_id"]), "question": item["question"],
                 "answers": answers, "k": k, "attributes": list(ATTRIBUTES), "item": extra},
    )
