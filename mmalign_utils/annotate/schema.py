"""The annotation reply format, its JSON schema, and the parser that turns judge text into validated scores.

A valid reply is one JSON object:
    {"reasoning": "step by step ...",
     "ratings": [{"answer": 1, "helpfulness": 3, "correctness": 4, "coherence": 4, "complexity": 1, "verbosity": 2},
                 ... one object per answer, each answer number 1..k exactly once]}
Scores are integers 0-4 (HelpSteer's scale). The object may come alone, inside a ```json fence, or after free
reasoning text (then that text is the reasoning if the object has none). Anything else is invalid, with a reason.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import jsonschema

from mmalign_utils.helpsteer import ATTRIBUTES, MAX_SCORE, MIN_SCORE


class InvalidReply(ValueError):
    """The judge's reply cannot be used; `str(error)` says why (stored with the quarantined item)."""


@dataclass
class ParsedAnnotation:
    scores: list[dict[str, int]]  # k dicts {attribute: score}, in answer order 1..k
    reasoning: str


def annotation_schema(k: int, require_reasoning: bool = True) -> dict:
    """JSON schema of a reply rating k answers. `reasoning` comes first so a model writing in schema order
    reasons before it scores."""
    rating = {
        "type": "object",
        "properties": {"answer": {"type": "integer", "minimum": 1, "maximum": k},
                       **{a: {"type": "integer", "minimum": MIN_SCORE, "maximum": MAX_SCORE} for a in ATTRIBUTES}},
        "required": ["answer", *ATTRIBUTES],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"reasoning": {"type": "string"},
                       "ratings": {"type": "array", "items": rating, "minItems": k, "maxItems": k}},
        "required": ["reasoning", "ratings"] if require_reasoning else ["ratings"],
        "additionalProperties": False,
    }


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def extract_json_object(text: str) -> tuple[dict, str]:
    """(the reply's JSON object, the text before it). Prefers the whole text, then a ```json fence, then the
    last object holding "ratings" found anywhere in the text. Raises InvalidReply when there is none."""
    stripped = text.strip()
    if not stripped:
        raise InvalidReply("empty reply")
    try:
        whole = json.loads(stripped)
        if isinstance(whole, dict):
            return whole, ""
        raise InvalidReply(f"reply is JSON but a {type(whole).__name__}, not an object")
    except json.JSONDecodeError:
        pass
    for match in reversed(list(_FENCE.finditer(text))):
        try:
            fenced = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if isinstance(fenced, dict):
            return fenced, text[:match.start()].strip()
    decoder = json.JSONDecoder()
    found: tuple[dict, str] | None = None
    for start in (m.start() for m in re.finditer(r"\{", text)):
        try:
            candidate, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(candidate, dict) and "ratings" in candidate:
            found = (candidate, text[:start].strip())  # keep going: the last complete object wins
    if found is None:
        raise InvalidReply("no JSON object with \"ratings\" in the reply")
    return found


def _describe(error: jsonschema.ValidationError) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    return f"{where or 'reply'}: {error.message}"


def parse_reply(text: str, k: int) -> ParsedAnnotation:
    """Validate a judge reply for k answers. Raises InvalidReply naming the first problem found."""
    obj, before = extract_json_object(text)
    validator = jsonschema.Draft202012Validator(annotation_schema(k, require_reasoning=False))
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        raise InvalidReply(_describe(errors[0]))
    numbers = sorted(rating["answer"] for rating in obj["ratings"])
    if numbers != list(range(1, k + 1)):
        raise InvalidReply(f"answers numbered {numbers}; expected each of 1..{k} exactly once")
    ordered = sorted(obj["ratings"], key=lambda rating: rating["answer"])
    scores = [{a: int(rating[a]) for a in ATTRIBUTES} for rating in ordered]
    return ParsedAnnotation(scores=scores, reasoning=(obj.get("reasoning") or before).strip())
