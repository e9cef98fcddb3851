"""The ShapesWorld oracle as the judge of the open-ended editions (Shapes-LLaVA-Bench, -MM-Vet, -MMHal).

Each review function takes (question, answer, item) and returns the reply text the official scorer parses
("8 6" for LLaVA-Bench, "0.5" for MM-Vet, "... Rating: 4" for MMHal), so the official parsing and aggregation
code runs unchanged. `item` is the oracle's item record (`judges.oracle.item_fields(qa_item)`: family, scene_json,
short_answer, label, qa_extra), plus "reference" for LLaVA-Bench. The functions are registered as oracle tasks
("shapes_llavabench", "shapes_mmvet", "shapes_mmhal") with `judges.oracle.register_oracle_task`.

RULES (version 1). The question's demand, the yes/no verdict, LRV premise handling and the grounding errors are
those of `judges/oracle.py` (the annotator's oracle), so both oracles agree on what is true.

1. Errors (correctness). An answer is correct when it has none of:
   - grounding errors of the claims about the scene (`world.grounding.ground`): a hallucinated object (no object
     has the stated shape and colour), a wrong size or position, a wrong number ("two circles"), a denial of
     something present;
   - a wrong core answer: for yes/no questions a verdict other than the label; for LRV instructions about an
     absent object, going along with the false premise; for short questions, naming a rival value (another
     colour, shape, size, cell, count, direction, object, or "nothing") without naming the right one anywhere.
2. Asked-for facts (informativeness = covered facts / asked-for facts):
   - describe (detailed description, "What is in this image?"): every object of the scene; covered as the
     grounding checker counts coverage (a mention with the object's shape and colour, even with a wrong size);
   - yes/no: the verdict (covered when it equals the label);
   - LRV about an absent object: the denial (covered when the answer denies it or corrects its size);
   - LRV about a present object: that it is there, its size, its position (three facts);
   - short questions: the answer, covered when an accepted answer (extra["accepted"], the short answer; numbers
     also as words, 0 also as a denial "there are no ...") occurs anywhere as whole words.
3. Scores:
   - LLaVA-Bench, 1-10 for the reference (Assistant 1) and the candidate (Assistant 2): an empty answer 1; else
     2 + round(8 x informativeness) - 3 x errors, clipped to 1..10.
   - MM-Vet, 0.0-1.0: an empty answer 0.0; informativeness if correct, half of it with any error; one decimal.
   - MMHal, 0-6 (MMHal's scale: 3 and above = no hallucination): level = 3 for all facts covered, 2 for at least
     half, 1 for some, 0 for none; correct answers get 3 + level, answers with errors min(level, 2); empty 0.
The reference answer is the world's templated detailed answer, scored by the same rules (it scores 10 / 1.0 / 6).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mmalign_utils.judges.base import Judge, JudgeError, JudgeReply, JudgeRequest
from mmalign_utils.judges.oracle import (
    OracleInputError, OracleItem, ShapesOracleJudge, lrv_core, register_oracle_task, scene_claims,
    short_answer_correct, verdict, words,
)
from mmalign_utils.world import vocab
from mmalign_utils.world.grounding import ground
from mmalign_utils.world.phrasing import number_word, with_article
from mmalign_utils.world.qa_basic import a_object
from mmalign_utils.world.scenes import Scene

RULES_VERSION = "1"
NOTHING_WORDS = ("nothing", "empty", "no object")

# ------------------------------------------------------------------------------------------------ phrase finding


def _normalise(text: str) -> str:
    return " ".join(words(text.replace("-", " ")))


def find_phrases(text: str, phrases: list[str]) -> set[str]:
    """Which of `phrases` occur in `text` as whole words, longest first (a matched span is used up, so "center"
    is not found inside "top center" when both are looked for)."""
    padded = f" {_normalise(text)} "
    found = set()
    for phrase in sorted({_normalise(p) for p in phrases if _normalise(p)}, key=len, reverse=True):
        target = f" {phrase} "
        if target in padded:
            found.add(phrase)
            padded = padded.replace(target, " | ")
    return found


# ------------------------------------------------------------------------------------------------ short answers

_NUMBER_TEXT = {n: [str(n), number_word(n)] for n in range(13)}
_OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}


def _number_of(text: str) -> int | None:
    text = text.strip().lower()
    for n, forms in _NUMBER_TEXT.items():
        if text in forms:
            return n
    return None


def _attr_phrase(attrs: Mapping[str, Any]) -> str:
    return " ".join(str(attrs[k]) for k in ("size", "color", "shape") if k in attrs)


def short_answer_phrases(subtype: str, accepted: list[str], extra: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(accepted phrases, rival phrases) of a short question: what a right answer says, and what a wrong one says
    instead (module rule 1)."""
    accepted = list(dict.fromkeys(accepted))
    first = accepted[0].lower() if accepted else ""
    rivals: list[str] = []
    number = _number_of(first)
    if subtype == "background":
        return list(extra.get("accepted", accepted)), list(extra.get("rivals", []))
    if number is not None and subtype not in ("mc_count",):
        accepted += _NUMBER_TEXT[number] + (["no", "none"] if number == 0 else [])
        # "one" is left out: it is as often a pronoun ("the red one") as a count
        rivals = [form for n, forms in _NUMBER_TEXT.items() if n != number for form in forms if form != "one"]
    elif subtype in ("color", "neighbour_color"):
        rivals = [w for w, c in vocab.COLOR_WORDS.items() if c != first]
        accepted += [w for w, c in vocab.COLOR_WORDS.items() if c == first]
    elif subtype == "shape":
        rivals = [w for w, (s, _) in vocab.SHAPE_WORDS.items() if s != first]
        accepted += [w for w, (s, _) in vocab.SHAPE_WORDS.items() if s == first]
    elif subtype == "size":
        rivals = [w for w, s in vocab.SIZE_WORDS.items() if s != first]
        accepted += [w for w, s in vocab.SIZE_WORDS.items() if s == first]
    elif subtype == "where":
        rivals = [p for p in vocab.ALL_POSITION_PHRASES if p not in accepted]
    elif subtype in ("what_at", "relation_neighbour"):
        combos = [f"{c} {s}" for c in vocab.COLORS for s in vocab.SHAPES]
        if first in NOTHING_WORDS:
            rivals = combos + list(vocab.SHAPES)
        else:
            shape = first.split()[-1]
            rivals = [c for c in combos if c != first] + [s for s in vocab.SHAPES if s != shape] + list(NOTHING_WORDS)
    elif subtype == "relation_choice":
        rivals = [_OPPOSITE[first]] if first in _OPPOSITE else []
    elif subtype == "which_more":
        shapes = extra.get("shapes", [])
        rivals = [form for s in shapes if s not in first for form in (s, vocab.plural(s))]
    elif subtype == "compare_size":
        refs = extra.get("refs", [])
        winner = extra.get("ref", {})
        accepted.append(_attr_phrase(winner))
        rivals = [_attr_phrase(r) for r in refs if r != winner]
    return [a for a in accepted if a], [r for r in rivals if r]


# ------------------------------------------------------------------------------------------------ the review


@dataclass
class Review:
    """What the oracle found in one answer."""

    facts: list[str]  # the asked-for facts
    covered: list[str]  # those the answer states
    errors: list[str]  # false statements (module rule 1)
    blank: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def informativeness(self) -> float:
        return len(self.covered) / len(self.facts) if self.facts else 0.0

    @property
    def correct(self) -> bool:
        return not self.errors

    def explanation(self) -> str:
        if self.blank:
            return "empty answer"
        found = "; ".join(self.errors) if self.errors else "none"
        return (f"covers {len(self.covered)} of {len(self.facts)} asked-for facts "
                f"({', '.join(self.covered) or 'none'}); errors: {found}")


def _oracle_item(question: str, item: Mapping[str, Any]) -> OracleItem:
    oi = OracleItem.from_fields(question, item)
    if not isinstance(oi.visual, Scene):
        raise OracleInputError("the open-ended ShapesWorld editions review shapes scenes, not charts")
    return oi


def _turn_extra(item: Mapping[str, Any]) -> dict:
    extra = dict(item.get("qa_extra") or {})
    if item.get("family") == "conversation" and extra.get("turn_extras"):
        return dict(extra["turn_extras"][0])
    return extra


def review_answer(question: str, answer: str, item: Mapping[str, Any]) -> Review:
    """Check one answer against the item's scene (module rules 1-2)."""
    oi = _oracle_item(question, item)
    scene: Scene = oi.visual
    extra = _turn_extra(item)
    blank = not words(answer or "")
    claims = scene_claims(answer or "", scene)
    errors = list(claims.errors)
    covered: list[str] = []
    if oi.demand == "describe":
        facts = [a_object(o) for o in scene.objects]
        report = ground(answer or "", scene)
        covered = [facts[i] for i in report.objects_covered]
    elif oi.demand == "yesno":
        facts = [f"verdict {oi.label}"]
        said = None if blank else verdict(answer, oi, claims)
        if said == oi.label:
            covered = facts[:]
        elif said is not None:
            errors.append(f"answers {said} (the answer is {oi.label})")
    elif oi.demand == "lrv_absent":
        thing = " ".join(str(oi.query[k]) for k in ("size", "color", "shape") if k in oi.query)
        facts = [f"there is no {thing}"]
        core = "missing" if blank else lrv_core(oi, claims, answer)
        if core == "correct":
            covered = facts[:]
        elif core == "wrong":
            errors.append(f"goes along with the false premise ({with_article(thing)})")
    elif oi.demand == "lrv_present":
        facts, covered = _present_object_facts(answer, oi, claims)
    else:
        accepted, rivals = short_answer_phrases(oi.subtype, oi.accepted, extra)
        facts = [f"answer {oi.accepted[0] if oi.accepted else '?'}"]
        found = find_phrases(answer or "", accepted + rivals)
        # short_answer_correct is used only for its "there are no ..." reading of a count of 0: its phrase match
        # would find "center" inside "top center"
        zero = bool(oi.accepted) and _number_of(oi.accepted[0]) == 0
        said_right = bool(found & {_normalise(a) for a in accepted}) or (zero and short_answer_correct(answer, oi))
        said_rival = sorted(found & {_normalise(r) for r in rivals})
        if said_right:
            covered = facts[:]
        elif said_rival:
            errors.append(f"says {said_rival[0]!r} (the answer is {oi.accepted[0] if oi.accepted else '?'})")
    return Review(facts=facts, covered=covered, errors=errors, blank=blank, notes=[f"{oi.demand} question"])


def _present_object_facts(answer: str, oi: OracleItem, claims) -> tuple[list[str], list[str]]:
    scene: Scene = oi.visual
    query = oi.query
    targets = [o for o in scene.objects if o.shape == query.get("shape") and o.color == query.get("color")]
    thing = f"{query.get('color')} {query.get('shape')}"
    facts = [f"the {thing} is there", "its size", "its position"]
    asserted = [m for m in claims.mentions if m.claim and not m.negated and m.shape == query.get("shape")
                and m.color == query.get("color")]
    covered = []
    if asserted:
        covered.append(facts[0])
    if any(m.size is not None and any(o.size == m.size for o in targets) for m in asserted) or \
            any(find_phrases(answer, [f"is {o.size}", f"{o.size} {thing}"]) for o in targets):
        covered.append(facts[1])
    if any(find_phrases(answer, [o.position, o.position_prepositional]) for o in targets):
        covered.append(facts[2])
    return facts, covered


# ------------------------------------------------------------------------------------------------ scores and replies


def llavabench_score(review: Review) -> int:
    if review.blank:
        return 1
    return max(1, min(10, 2 + round(8 * review.informativeness) - 3 * len(review.errors)))


def mmvet_score(review: Review) -> float:
    if review.blank:
        return 0.0
    return round(review.informativeness * (1.0 if review.correct else 0.5), 1)


def mmhal_rating(review: Review) -> int:
    if review.blank:
        return 0
    share = review.informativeness
    level = 3 if share >= 0.999 else 2 if share >= 0.5 else 1 if share > 0 else 0
    return 3 + level if review.correct else min(level, 2)


def llavabench_review(question: str, answer: str, item: Mapping[str, Any]) -> str:
    """"<reference score> <candidate score>" on the first line, as LLaVA's reviewer writes it, then why."""
    if "reference" not in item:
        raise OracleInputError("a LLaVA-Bench review needs item['reference'] (the reference answer)")
    ref, cand = review_answer(question, item["reference"], item), review_answer(question, answer, item)
    return (f"{llavabench_score(ref)} {llavabench_score(cand)}\n"
            f"Assistant 1: {ref.explanation()}.\nAssistant 2: {cand.explanation()}.")


def mmvet_review(question: str, answer: str, item: Mapping[str, Any]) -> str:
    """The correctness score alone, as MM-Vet's grader completes its table row (3 tokens at most)."""
    return f"{mmvet_score(review_answer(question, answer, item)):.1f}"


def mmhal_review(question: str, answer: str, item: Mapping[str, Any]) -> str:
    review = review_answer(question, answer, item)
    verdict_text = "no hallucination" if review.correct else "hallucination"
    return f"The answer {review.explanation()} ({verdict_text}).\nRating: {mmhal_rating(review)}"


REVIEWS = {"shapes_llavabench": llavabench_review, "shapes_mmvet": mmvet_review, "shapes_mmhal": mmhal_review}


def _task(review_fn):
    def task(payload: Mapping[str, Any]) -> str:
        if "item" not in payload or "answer" not in payload:
            raise OracleInputError("a ShapesWorld review payload needs 'question', 'answer' and 'item'")
        return review_fn(str(payload.get("question", "")), str(payload["answer"]), payload["item"])
    return task


for _name, _fn in REVIEWS.items():
    register_oracle_task(_name, _task(_fn))


# ------------------------------------------------------------------------------------------------ judge plumbing


def _last_user_text(request: JudgeRequest) -> str:
    return next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")


class PayloadAttachingJudge(Judge):
    """Hands the oracle the structured task for requests built by the official scorers, which write prose only.

    Before scoring, the edition registers the exact user message the official scorer will build for each item
    (`expect(text, payload)`, using the scorer's own prompt builder); a request then reaches the oracle with its
    payload attached. A request carrying its own payload is passed on unchanged.
    """

    def __init__(self, inner: Judge | None = None):
        super().__init__(cache=None)
        self.inner = inner if inner is not None else ShapesOracleJudge()
        self.judge_id = self.inner.judge_id
        self._payloads: dict[str, dict] = {}

    def expect(self, user_text: str, payload: dict) -> None:
        self._payloads[user_text] = payload

    def _call(self, request: JudgeRequest) -> JudgeReply:
        payload = request.payload or self._payloads.get(_last_user_text(request))
        if not payload:
            raise JudgeError(f"no oracle payload for request {request.tag!r}: the edition registers one per item "
                             "before calling the official scorer (was the prompt or the answer changed?)")
        return self.inner.complete(dataclasses.replace(request, payload=payload))


def is_oracle(judge: Judge | None) -> bool:
    """Whether a judge is (or wraps) the ShapesWorld oracle, which needs payloads rather than prose."""
    return judge is None or isinstance(judge, (ShapesOracleJudge, PayloadAttachingJudge)) or \
        str(getattr(judge, "judge_id", "")).startswith("oracle:")


def reference_check(question: str, item: Mapping[str, Any]) -> Review:
    """The review of the item's reference answer (it should be complete and correct)."""
    return review_answer(question, item["reference"], item)

