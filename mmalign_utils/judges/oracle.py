"""The ShapesWorld oracle: an exact, rule-based stand-in for the paper's Gemini annotator.

`make_judge("oracle")` (or `"oracle:noise=0.5,seed=1"`) returns a judge that reads the task from
`request.payload` instead of prose. For the "helpsteer_annotation" task (built by `annotate.build_request`) it
rates every answer on HelpSteer's five attributes, 0-4, from the scene graph or chart the item carries, and
replies with the annotation JSON (`{"reasoning": ..., "ratings": [...]}`), as a human HelpSteer rater would
under the rules below. Other modules add tasks with `register_oracle_task(name, fn)`.

What an item must carry (in `payload["item"]`; `item_fields(qa_item)` builds it from a ShapesWorld QAItem):
    scene_json (or scene): Scene.to_dict() / Chart.to_dict(), as JSON text or a dict
    family: the QAItem family ("existence", "describe", "count", "chart", ...)
    short_answer, label ("yes"/"no"/None), qa_extra (QAItem.extra: subtype, accepted answers, query object,
    and answer_format when the question ends with an answer-format demand, `world.answer_format`)

RULES (version 2; version 1 had no rule 8). Words are runs of letters or digits. "Errors" are the grounding errors of
`world.grounding.ground` for shapes scenes (hallucinated objects, wrong sizes/positions, wrong numbers, false
denials) and, for charts, the chart-claim errors below (colours not in the chart, wrong bar/line/point counts,
wrong chart kind, a wrong tallest/shortest bar, a wrong trend, a geometric shape other than the bars'
rectangles or the lines' dots).

1. What was asked (the "demand"), from family and subtype:
   yes/no      label is yes/no (POPE-like existence, yes/no relations and reasoning, yes/no chart questions)
   lrv_absent  "Describe the X" where X is not in the image (LRV negative instruction; label no)
   lrv_present "Describe the X" where X is in the image (LRV positive instruction; label yes)
   describe    a detailed description of the scene or chart (also a conversation's "What is in this image?")
   short       any other question with one right answer (colour, count, where, which, chart value, ...)
2. The core answer:
   yes/no      the verdict: the first word if it is yes/no (or yeah, correct, nope, ...); for existence
               questions, else the first claim about the queried object (asserted = yes, denied = no); for other
               yes/no questions, else a negation in the first sentence = no; otherwise no verdict (missing).
   lrv_absent  correct if the answer denies the queried object (or names its real size for a size-manipulated
               query, or opens with a negation); wrong if it asserts the object as described; else missing.
   lrv_present correct if it asserts the queried object; wrong if it denies it; else missing.
   short       correct if the first sentence contains an accepted answer as whole words (numbers also as words;
               for an answer of 0 also a negation such as "there are no ..."); otherwise wrong.
   describe    no core; coverage instead = share of objects (shapes) or key facts (charts: kind, number of
               bars/lines, tallest and shortest bar or each line's trend) the answer states.
3. correctness (is what it says true, is the pertinent fact there):
   describe    cap = 4 if coverage is full, 3 if at least half, 2 if some, 1 if none; correctness = cap - errors.
               An answer of 8+ words that states nothing true and whose words are 10%+ unfamiliar (rule 5)
               describes other things ("a cat on a glass"): cap 0.
   core right  4 - errors, at least 1.
   core wrong  1 if the answer also states something true about the image, else 0.
   missing     2 if it states something true, else 1; minus errors.
4. helpfulness (does it give the asker what they asked for, correctly):
   describe    the same coverage level as correctness minus errors; an answer under 5 words, or one that claims
               nothing about the image, gets at most 1 (correct but not what was asked).
   yes/no      right verdict: 4 with a supporting reason (at least 5 words and a true claim about the image), or
               bare when the question asked for a word or phrase (rule 8), 3 otherwise; minus errors, at least 1.
               wrong verdict: 0. no verdict: 1 if it states something true and nothing false, else 0.
   lrv_absent  right (denies): 4 if it also says what is there instead, else 3; minus errors, at least 1.
               wrong (goes along with the false premise): 0. missing: as for yes/no.
   lrv_present right: 2, +1 if it states the object's size correctly, +1 if its position (or names its cell
               anywhere); minus errors, at least 1.
               wrong: 0. missing: as for yes/no.
   short       right: 4 as a sentence of at least 4 words, or bare when the question asked for a word, phrase or
               option letter (rule 8), 3 as a bare word or phrase otherwise; minus errors, at least 1.
               wrong: 0.
   then        at most coherence + 1 (a garbled answer is hard to use), and 1 less if the answer is over four
               times the expected length (rambling; with a detail demand the expected length is at least 12
               words per sentence asked for), never below 0.
5. coherence (clarity, whatever the truth): 4 minus penalties: 3-word repetition (share of repeated 3-grams
   over 0.12: 1, over 0.3: 2, over 0.5: 3; a sentence repeated verbatim: at least 1); junk tokens (share of
   tokens that are not words or numbers over 0.05: 1, over 0.2: 2, over 0.4: 4); word salad or off-topic
   rambling (in answers of 4+ words, the share of words that are neither everyday English (a list in this
   module), nor the world's vocabulary, nor words of the question, over 0.3: 1, over 0.45: 2, over 0.6: 3);
   truncated mid-sentence (8+ words not ending in . ! ? or a closing quote/bracket): 1; self-contradiction (the
   same object asserted and denied): 1. An empty answer scores 0.
6. complexity (language, not quality): 0 for 3 words or fewer; else 1, +1 for a mean sentence length of at least
   10 words, +1 for a connective of reasoning (because, since, so, therefore, while, whereas, which, ...) in an
   answer of 12+ words, +1 for at least 20% long words (7+ letters) in an answer of 25+ words; at most coherence.
7. verbosity (length against what the question calls for): ratio = words / expected words, expected = 12 for
   yes/no, 10 for short, 18 for LRV instructions, 8 + 10 per object for scene descriptions, 30 + 6 per series for
   chart descriptions; ratio < 0.25: 0, < 0.6: 1, <= 1.6: 2, <= 3: 3, above: 4.

8. answer-format demands (only for questions that carry one in qa_extra["answer_format"], a share of the
   toy's preference prompts; `world.answer_format.honours` decides): a word or phrase (one sentence of 1-4
   words), one sentence (exactly one, 3+ words), the option's letter alone, or N sentences of detail (N or
   more). Not honoured: helpfulness 1 less, never below 0. Honoured: the length terms of rule 4 give way (a bare
   right word or letter earns the 4 that a sentence would). The other attributes do not look at demands.

The reply's "reasoning" states, per answer, the demand, the core verdict, the claims found, the coverage and the
length, so a reader can check every score against these rules.

A lenient rater (`oracle:miss=P[,seed=N]`): the oracle finds every false statement; a VLM rater such as Gemini
does not. With miss=P each grounding or chart-claim error (not the core verdict or answer, which is checked as
before) is overlooked with probability P, drawn from a hash of (seed, question, answer, error), so reruns agree.
Overlooked errors cost nothing in rules 3 and 4 and are listed as "overlooked" in the reasoning. The toy profile's
P is calibrated to the paper's Figure 3 (docs/oracle_and_sampling.md, `scripts/calibrate_oracle_miss.py`).
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mmalign_utils.helpsteer import ATTRIBUTES
from mmalign_utils.judges.base import Judge, JudgeConfigError, JudgeError, JudgeReply, JudgeRequest
from mmalign_utils.world import vocab
from mmalign_utils.world.answer_format import honours
from mmalign_utils.world.charts import Chart
from mmalign_utils.world.grounding import extract_mentions, ground
from mmalign_utils.world.lexicon import NUMBER_WORDS
from mmalign_utils.world.scenes import Scene

ORACLE_VERSION = "2"  # 2: rule 8 (answer-format demands); ratings of items without a demand as in 1

# ------------------------------------------------------------------------------------------------------------
# The task registry


class OracleInputError(ValueError):
    """The payload lacks what a task needs (e.g. no scene); the judge turns it into a JudgeError (quarantine)."""


OracleTask = Callable[[Mapping[str, Any]], "dict | str"]
_TASKS: dict[str, OracleTask] = {}


def register_oracle_task(name: str, fn: OracleTask) -> None:
    """Make the oracle answer requests whose payload has {"task": name}: fn(payload) returns the reply as a
    JSON-able dict or as text. Raise OracleInputError for payloads it cannot rate."""
    _TASKS[name] = fn


def oracle_tasks() -> list[str]:
    return sorted(_TASKS)


class ShapesOracleJudge(Judge):
    """A judge that answers from `request.payload` with the registered task functions (no prose is read)."""

    judge_id = f"oracle:shapesworld-v{ORACLE_VERSION}"  # the exact rater; a lenient one adds its miss rate

    def __init__(self, cache=None, miss_rate: float = 0.0, miss_seed: int = 0):
        super().__init__(cache=cache)
        if not 0.0 <= miss_rate <= 1.0:
            raise JudgeConfigError(f"the oracle's miss rate is a probability in [0, 1], got {miss_rate}")
        self.miss_rate, self.miss_seed = float(miss_rate), int(miss_seed)
        self.judge_id = ShapesOracleJudge.judge_id + (
            f"(miss={self.miss_rate:g},seed={self.miss_seed})" if self.miss_rate > 0 else "")

    def __repr__(self) -> str:
        return f"ShapesOracleJudge(tasks={oracle_tasks()}, miss_rate={self.miss_rate:g}, miss_seed={self.miss_seed})"

    def _call(self, request: JudgeRequest) -> JudgeReply:
        payload = request.payload or {}
        if not payload:
            raise JudgeError("the ShapesWorld oracle reads request.payload, and this request has none; build "
                             "annotation requests with mmalign_utils.annotate.build_request")
        task = payload.get("task")
        fn = _TASKS.get(task)
        if fn is None:
            raise JudgeError(f"the oracle has no task {task!r}; registered: {oracle_tasks()} "
                             "(add one with register_oracle_task)")
        if self.miss_rate > 0:  # tasks that rate claims read it; the others ignore it
            payload = {**payload, "error_miss": {"rate": self.miss_rate, "seed": self.miss_seed}}
        try:
            out = fn(payload)
        except OracleInputError as error:
            raise JudgeError(f"oracle cannot rate item {payload.get('item_id', '?')!r}: {error}") from None
        text = out if isinstance(out, str) else json.dumps(out)
        return JudgeReply(text=text, judge_id=self.judge_id, raw={"task": task})


def _build_oracle(rest: str, cache=None, noise: float | None = None, seed: int | None = None,
                  attributes: str | list[str] | None = None, miss: float | None = None, **kwargs: Any) -> Judge:
    """`oracle`, `oracle:miss=0.5` (overlook that share of errors) or
    `oracle:noise=0.5,seed=1,attributes=helpfulness+correctness` (noise = Gaussian sd); seed serves both."""
    if kwargs:
        raise JudgeConfigError(f"the oracle takes miss=, noise=, seed= and attributes=, not {sorted(kwargs)}")
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in ("miss", "noise", "seed", "attributes"):
            raise JudgeConfigError(f"oracle spec {rest!r}: use oracle:miss=P,noise=SD,seed=N[,attributes=a+b]; "
                                   f"{part!r} is not one of those")
        options[key] = value
    try:
        sd = float(options["noise"]) if "noise" in options else (noise or 0.0)
        miss_rate = float(options["miss"]) if "miss" in options else (miss or 0.0)
        noise_seed = int(options["seed"]) if "seed" in options else (seed or 0)
    except ValueError:
        raise JudgeConfigError(f"oracle spec {rest!r}: miss and noise must be numbers and seed an integer") from None
    chosen = options["attributes"].split("+") if "attributes" in options else attributes
    if isinstance(chosen, str):
        chosen = chosen.split("+")
    judge = ShapesOracleJudge(cache=None if sd > 0 else cache, miss_rate=miss_rate, miss_seed=noise_seed)
    if sd <= 0:
        return judge
    from mmalign_utils.annotate.noise import NoisyJudge  # local: annotate imports the judges package

    try:
        return NoisyJudge(judge, sd=sd, seed=noise_seed, attributes=tuple(chosen or ATTRIBUTES), cache=cache)
    except ValueError as error:
        raise JudgeConfigError(f"oracle spec {rest!r}: {error}") from None


def _register() -> None:
    from mmalign_utils.judges.factory import register_backend

    register_backend("oracle", _build_oracle)


# ------------------------------------------------------------------------------------------------------------
# Items


def item_fields(qa_item: Any) -> dict[str, Any]:
    """The fields an annotation item needs for the oracle, from a ShapesWorld QAItem (JSON-safe)."""
    return {"family": qa_item.family, "kind": qa_item.kind, "scene_json": json.dumps(qa_item.scene, sort_keys=True),
            "short_answer": qa_item.short_answer, "label": qa_item.label,
            "negative_strategy": qa_item.negative_strategy, "qa_extra": qa_item.extra}


@dataclass
class OracleItem:
    """What the rules need to know about one question."""

    question: str
    visual: Scene | Chart
    family: str
    subtype: str
    label: str | None
    accepted: list[str]
    query: dict
    demand: str  # "yesno" | "lrv_absent" | "lrv_present" | "describe" | "short"
    expected_words: int
    answer_format: dict = field(default_factory=dict)  # rule 8: the question's answer-format demand, if any

    @property
    def is_chart(self) -> bool:
        return isinstance(self.visual, Chart)

    @classmethod
    def from_fields(cls, question: str, item: Mapping[str, Any]) -> OracleItem:
        raw = item.get("scene_json", item.get("scene"))
        if raw is None:
            raise OracleInputError("the item carries no scene_json/scene (ShapesWorld scene or chart as JSON)")
        try:
            data = json.loads(raw) if isinstance(raw, str) else dict(raw)
            visual: Scene | Chart = Chart.from_dict(data) if data.get("kind") == "chart" else Scene.from_dict(data)
        except (ValueError, KeyError, TypeError) as error:
            raise OracleInputError(f"scene_json is not a ShapesWorld scene or chart ({error})") from None
        family = item.get("family")
        if not family:
            raise OracleInputError("the item carries no question family")
        extra = dict(item.get("qa_extra") or item.get("extra") or {})
        short, label = item.get("short_answer"), item.get("label")
        if family == "conversation" and extra.get("turn_extras"):  # rated as its first turn
            turn_labels = extra.get("turn_labels") or [label]
            short = (extra.get("turn_short_answers") or [short])[0]
            label, extra = turn_labels[0], dict(extra["turn_extras"][0])
        subtype = extra.get("subtype", "")
        accepted = [str(a) for a in extra.get("accepted") or []]
        if short and str(short) not in accepted:
            accepted.append(str(short))
        demand = _demand(family, subtype, label)
        return cls(question=question, visual=visual, family=family, subtype=subtype, label=label,
                   accepted=accepted, query=dict(extra.get("query") or {}), demand=demand,
                   expected_words=_expected_words(demand, visual),
                   answer_format=dict(extra.get("answer_format") or {}))


def _demand(family: str, subtype: str, label: str | None) -> str:
    if subtype == "lrv":
        return "lrv_absent" if label == "no" else "lrv_present"
    if family == "describe" or subtype in ("describe", "chart_describe", "summary"):
        return "describe"
    if label in ("yes", "no"):
        return "yesno"
    return "short"


def _expected_words(demand: str, visual: Scene | Chart) -> int:
    if demand == "describe":
        return 30 + 6 * len(visual.series) if isinstance(visual, Chart) else 8 + 10 * len(visual.objects)
    return {"yesno": 12, "short": 10, "lrv_absent": 18, "lrv_present": 18}[demand]


# ------------------------------------------------------------------------------------------------------------
# Text measurements (coherence, complexity, verbosity)

_WORD_RE = re.compile(r"[A-Za-z]+(?:['’-][A-Za-z]+)*|\d+(?:\.\d+)?")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_CONNECTIVES = frozenset({"because", "since", "so", "therefore", "thus", "hence", "while", "whereas", "although",
                          "though", "which", "however", "compared", "meaning", "means", "whereby", "unlike"})
_NEGATORS = frozenset({"no", "not", "none", "neither", "nor", "nothing", "never", "cannot", "nowhere", "without"})
_YES = frozenset({"yes", "yeah", "yep", "correct", "indeed", "certainly", "sure", "true"})
_NO = frozenset({"no", "nope", "not", "none", "false", "incorrect"})


# Everyday English an answer about a picture or a chart is written in (function words, common verbs, nouns and
# adjectives). With the world's own vocabulary and the question's words it defines the words an on-topic answer
# uses; a text made mostly of other words is word salad or off-topic rambling (rule 5).
_COMMON_ENGLISH = frozenset("""
a about above across after again against all almost along also although always am among an and another any anything
are around as at away back be because been before behind being below beside besides between both but by can cannot
could did do does doing done down during each either else enough even ever every everything except few for from
further had has have having he her here hers him his how however i if in inside instead into is it its itself just
least less let like many may me might more most much must my near nearly neither next no nobody none nor not nothing
now of off often on once one only onto or other others otherwise our out outside over own per perhaps quite rather
really same several shall she should since so some something such than that the their them themselves then there
therefore these they this those though through thus to together too toward towards under unlike until up upon us
very via was we well were what whatever when where whereas whether which while who whole whom whose why will with
within without would yes yet you your
add answer appear arrange ask begin believe bring call change check choose come compare consider contain count
depict describe detail determine differ display draw end exist explain face feature fill find follow form give go
grow happen have help hold identify include indicate keep know leave lie locate look make mark mean measure mention
move name note notice observe occupy paint place plot point position present provide reach read remain represent
rest say see seem set show sit spread stand start state stay suggest take tell think use vary view want
arrangement area background border bottom box case center centre chart choice color colour column corner count
data detail diagram difference direction drawing edge element end example fact feature figure form frame graph grid
group half height item kind label layout left level line lot middle number object order pair part pattern picture
place plot point portion question reason region result right row scale scene section series set shape side size
space spot square surface thing total trend type value view way whole width word x y axis overall
alone apart available certain clear clearly close common complete correct different direct directly distinct each
empty entire equal exact exactly far final first full general given high higher highest large last later left
little long low lower lowest main many mostly much new next only opposite other overall own plain possible precise
real right second separate short similar simple single small specific still sure third top total true unique upper
usual various visible whole wide
""".split())
_ENDINGS = ("ies", "es", "s", "ed", "ing", "ly", "er", "est")


def _known(word: str, extra: frozenset[str]) -> bool:
    if word in extra or word.isdigit():
        return True
    return any(word.endswith(e) and len(word) - len(e) >= 2 and (word[:-len(e)] in extra
                                                                  or word[:-len(e)] + "e" in extra
                                                                  or (e == "ies" and word[:-3] + "y" in extra))
               for e in _ENDINGS)


def _world_words() -> frozenset[str]:
    from mmalign_utils.world import lexicon as lx
    from mmalign_utils.world.charts import BAR_TOPICS, LINE_TOPICS

    found: set[str] = set(_COMMON_ENGLISH) | set(NUMBER_WORDS)
    for name in dir(lx):
        value = getattr(lx, name)
        if isinstance(value, (frozenset, set, dict)):
            found |= {w for w in value if isinstance(w, str)}
    found |= set(vocab.COLOR_WORDS) | set(vocab.SHAPE_WORDS) | set(vocab.SIZE_WORDS) | set(vocab.GENERIC_WORDS)
    found |= set(vocab.ROWS) | set(vocab.COLS) | {w for b in vocab.BACKGROUNDS for w in b.split()}
    for title, entity, labels in BAR_TOPICS:
        found |= set(words(title)) | {entity} | {w for label in labels for w in words(label)}
    for title2, title1, entity, labels, unit in LINE_TOPICS:
        found |= set(words(title2)) | set(words(title1)) | {entity, unit}
        found |= {w for label in labels for w in words(label)}
    return frozenset(found)


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD_RE.findall(text)]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_SPLIT.split(text.strip()) if s.strip()]


def _has_negation(text: str) -> bool:
    ws = words(text)
    return any(w in _NEGATORS or w.endswith("n't") for w in ws)


@dataclass
class TextStats:
    n_words: int
    repeat_share: float  # share of word 3-grams that repeat an earlier one
    repeated_sentence: bool
    junk_share: float  # share of whitespace tokens that are neither words nor numbers
    truncated: bool
    mean_sentence_words: float
    long_word_share: float
    connectives: int
    unknown_share: float  # share of words outside everyday English, the world's words and the question's


_WORLD_WORDS: frozenset[str] | None = None


def text_stats(text: str, question: str = "") -> TextStats:
    ws = words(text)
    grams = [tuple(ws[i:i + 3]) for i in range(len(ws) - 2)]
    repeat = 1 - len(set(grams)) / len(grams) if len(grams) >= 4 else 0.0
    sents = sentences(text)
    normalized = [" ".join(words(s)) for s in sents if words(s)]
    tokens = text.split()
    junk = [t for t in tokens if not re.fullmatch(r"[\"'(\[]*([A-Za-z]+(?:['’-][A-Za-z]+)*|\d+(?:[.,:]\d+)*)"
                                                  r"[.,;:!?\"')\]]*", t)]
    stripped = text.rstrip()
    truncated = len(ws) >= 8 and not re.search(r"[.!?][\"')\]]*$", stripped)
    return TextStats(
        n_words=len(ws), repeat_share=repeat, repeated_sentence=len(set(normalized)) < len(normalized),
        junk_share=len(junk) / len(tokens) if tokens else 0.0, truncated=truncated,
        mean_sentence_words=len(ws) / max(1, len(normalized)),
        long_word_share=sum(len(w) >= 7 for w in ws) / len(ws) if ws else 0.0,
        connectives=sum(w in _CONNECTIVES for w in ws), unknown_share=_unknown_share(ws, question))


def _unknown_share(ws: list[str], question: str) -> float:
    global _WORLD_WORDS
    if not ws:
        return 0.0
    if _WORLD_WORDS is None:
        _WORLD_WORDS = _world_words()
    known = _WORLD_WORDS | frozenset(words(question))
    return sum(not _known(w, known) for w in ws) / len(ws)


def coherence_score(stats: TextStats, contradiction: bool) -> tuple[int, list[str]]:
    if stats.n_words == 0:
        return 0, ["empty"]
    penalty, notes = 0, []
    rep = 3 if stats.repeat_share > 0.5 else 2 if stats.repeat_share > 0.3 else 1 if stats.repeat_share > 0.12 else 0
    if stats.repeated_sentence:
        rep = max(rep, 1)
    if rep:
        penalty += rep
        notes.append(f"repetition ({stats.repeat_share:.0%} repeated 3-grams)")
    junk = 4 if stats.junk_share > 0.4 else 2 if stats.junk_share > 0.2 else 1 if stats.junk_share > 0.05 else 0
    if junk:
        penalty += junk
        notes.append(f"junk tokens ({stats.junk_share:.0%})")
    salad = 3 if stats.unknown_share > 0.6 else 2 if stats.unknown_share > 0.45 else 1 \
        if stats.unknown_share > 0.3 else 0
    if salad and stats.n_words >= 4:
        penalty += salad
        notes.append(f"off-topic or word salad ({stats.unknown_share:.0%} unfamiliar words)")
    if stats.truncated:
        penalty += 1
        notes.append("truncated")
    if contradiction:
        penalty += 1
        notes.append("asserts and denies the same object")
    return max(0, 4 - penalty), notes


def complexity_score(stats: TextStats, coherence: int) -> int:
    if stats.n_words <= 3:
        return 0
    score = 1 + (stats.mean_sentence_words >= 10) + (stats.connectives >= 1 and stats.n_words >= 12) \
        + (stats.long_word_share >= 0.2 and stats.n_words >= 25)
    return min(int(score), coherence, 4)


def verbosity_score(n_words: int, expected: int) -> int:
    ratio = n_words / expected
    return 0 if ratio < 0.25 else 1 if ratio < 0.6 else 2 if ratio <= 1.6 else 3 if ratio <= 3 else 4


# ------------------------------------------------------------------------------------------------------------
# Claims: shapes scenes through the grounding checker, charts through the rules below


@dataclass
class Claims:
    n_correct: int  # true statements about the image
    errors: list[str]  # one entry per false statement
    coverage: float  # share of objects / key chart facts stated
    contradiction: bool = False
    mentions: list = field(default_factory=list)  # grounding mentions (shapes scenes only)


def scene_claims(text: str, scene: Scene) -> Claims:
    report = ground(text, scene)
    errors = [f"hallucinated {m.text!r}" for m in report.hallucinated]
    errors += [f"wrong {w.attribute} in {w.mention.text!r} (is {'/'.join(w.actual)})" for w in report.wrong_attributes]
    errors += [f"says {c.claimed} for {c.mention.text!r} (is {c.actual})"
               for c in report.number_claims if not c.correct]
    errors += [f"denies {m.text!r}, which is there" for m in report.false_negations]
    asserted = {(m.shape, m.color) for m in report.asserted if m.shape is not None}
    denied = {(m.shape, m.color) for m in report.negated if m.shape is not None}
    n_correct = len(report.correct) + sum(c.correct for c in report.number_claims)
    n_correct += sum(1 for m in report.negated
                     if m.shape is not None and all(m is not f for f in report.false_negations))
    return Claims(n_correct=n_correct, errors=errors, coverage=report.coverage,
                  contradiction=bool(asserted & denied), mentions=report.mentions)


_UP = frozenset({"up", "upward", "upwards", "increase", "increases", "increasing", "rise", "rises", "rising",
                 "grow", "grows", "growing", "climbs", "climbing"})
_DOWN = frozenset({"down", "downward", "downwards", "decrease", "decreases", "decreasing", "decline", "declines",
                   "declining", "fall", "falls", "falling", "drop", "drops", "dropping"})
_TALL = frozenset({"tallest", "highest", "largest", "biggest", "longest", "greatest", "maximum"})
_SHORT = frozenset({"shortest", "lowest", "smallest", "least", "minimum"})


def _number(word: str) -> int | None:
    if word.isdigit():
        return int(word)
    return NUMBER_WORDS.get(word)


def chart_claims(text: str, chart: Chart) -> Claims:
    """Check what a text says about a chart: colours, counts, kind, tallest/shortest bar, line trends."""
    colors = {s.color for s in chart.series}
    correct, errors, facts = 0, [], set()
    ws = words(text)
    # only the world's palette counts: "white background" or "gray gridlines" are not claims about series
    named_colors = {vocab.COLOR_WORDS[w] for w in ws if w in vocab.COLOR_WORDS} & set(vocab.COLORS)
    for wrong in sorted(named_colors - colors):
        errors.append(f"names a {wrong} {'bar' if chart.kind == 'bar' else 'line'}, which the chart does not have")
    for match in re.finditer(r"\b(bar|line)\s+(?:chart|graph|plot|diagram)", text.lower()):
        if match.group(1) == chart.kind:
            correct += 1
            facts.add("kind")
        else:
            errors.append(f"calls it a {match.group(1)} chart")
    counted = {"bar": len(chart.series) if chart.kind == "bar" else None,
               "line": len(chart.series) if chart.kind == "line" else None,
               "point": chart.n_points if chart.kind == "line" else None}
    for i, word in enumerate(ws):
        n = _number(word)
        if n is None:
            continue
        j = i + 1  # "three bars", "two purple lines", "six data points"
        while j < len(ws) and j - i <= 3 and (ws[j] in vocab.COLOR_WORDS or ws[j] in ("data", "and", "colored")):
            j += 1
        noun = ws[j].removesuffix("s") if j < len(ws) else ""
        if noun not in counted or counted[noun] is None:
            continue
        if n == counted[noun]:
            correct += 1
            facts.add("count" if noun != "point" else "points")
        else:
            errors.append(f"says {n} {noun}s (there are {counted[noun]})")
    clauses = [c for sentence in sentences(text) for c in re.split(r"[,;:]|\b(?:and|but|while|whereas)\b", sentence)]
    for clause in clauses:
        sw = set(words(clause))
        if _has_negation(clause):
            continue  # denials ("is not the tallest") are not checked
        named = [c for c in chart.series if c.color in sw]
        if chart.kind == "bar" and len(named) == 1:
            for wordset, truth, fact in ((_TALL, chart.tallest(), "tallest"), (_SHORT, chart.shortest(), "shortest")):
                if sw & wordset and not (sw & (_TALL | _SHORT) - wordset):
                    if named[0].color == truth.color:
                        correct += 1
                        facts.add(fact)
                    else:
                        errors.append(f"says the {named[0].color} bar is the {fact} (it is the {truth.color} one)")
        if chart.kind == "line" and (sw & _UP) and (sw & _DOWN):
            continue
        if chart.kind == "line" and (sw & (_UP | _DOWN)):
            lines = named if named else (list(chart.series) if len(chart.series) == 1 else [])
            if len(lines) == 1:
                said = "up" if sw & _UP else "down"
                if chart.trend(lines[0]) == said:
                    correct += 1
                    facts.add(f"trend:{lines[0].color}")
                else:
                    errors.append(f"says the {lines[0].color} line goes {said}")
    drawn = "square" if chart.kind == "bar" else "circle"  # bars are rectangles; line points are dots
    for m in extract_mentions(text):
        if m.claim and not m.negated and m.shape is not None and m.shape != drawn:
            errors.append(f"describes a {m.shape} ({m.text!r}) in a chart")
    key = {"kind", "count"} | ({"tallest", "shortest"} if chart.kind == "bar"
                               else {f"trend:{s.color}" for s in chart.series})
    return Claims(n_correct=correct, errors=errors, coverage=len(facts & key) / len(key))


# ------------------------------------------------------------------------------------------------------------
# The core answer


def _first_word(text: str) -> str:
    ws = words(text)
    return ws[0] if ws else ""


def verdict(text: str, item: OracleItem, claims: Claims) -> str | None:
    """'yes', 'no' or None for a yes/no question (rule 2)."""
    first = _first_word(text)
    if first in _YES:
        return "yes"
    if first in _NO:
        return "no"
    if item.query and not item.is_chart:
        for m in claims.mentions:
            if m.claim and _matches_query(m, item.query):
                return "no" if m.negated else "yes"
        return None
    sents = sentences(text)
    if sents and _has_negation(sents[0]):
        return "no"
    return None


def _matches_query(mention: Any, query: Mapping[str, Any]) -> bool:
    return mention.shape == query.get("shape") and (query.get("color") is None or mention.color == query["color"])


def _contains_phrase(text: str, phrase: str) -> bool:
    target = words(phrase)
    if not target:
        return False
    ws = words(text)
    return any(ws[i:i + len(target)] == target for i in range(len(ws) - len(target) + 1))


_POSITION_PHRASES = sorted({vocab.position_phrase(r, c) for r in range(vocab.GRID) for c in range(vocab.GRID)},
                           key=lambda p: len(words(p)), reverse=True)


def positions_in(text: str) -> list[str]:
    """Position phrases in a text, longest first without overlaps: "top center" is found as "top center",
    never also as "center"."""
    ws, found, i = words(text), [], 0
    while i < len(ws):
        for phrase in _POSITION_PHRASES:
            target = words(phrase)
            if ws[i:i + len(target)] == target:
                found.append(phrase)
                i += len(target)
                break
        else:
            i += 1
    return found


def short_answer_correct(text: str, item: OracleItem) -> bool:
    """Rule 2 for short questions: an accepted answer in the first sentence (numbers also as words)."""
    sents = sentences(text)
    first = sents[0] if sents else ""
    candidates = set(item.accepted)
    for a in list(candidates):
        n = _number(a.lower())
        if n is not None:
            candidates |= {str(n)} | {w for w, v in NUMBER_WORDS.items() if v == n}
            if n == 0 and _has_negation(first):
                return True
    if item.family == "multiple_choice":
        letter = re.match(r"\W*\(?([A-Da-d])\b", first)
        if letter and letter.group(1).upper() in {a.upper() for a in item.accepted}:
            return True
    if candidates & set(_POSITION_PHRASES):
        return any(p in candidates for p in positions_in(first))
    return any(_contains_phrase(first, a) for a in candidates)


def lrv_core(item: OracleItem, claims: Claims, text: str) -> str:
    """'correct' | 'wrong' | 'missing' for an LRV instruction (rule 2)."""
    target = [m for m in claims.mentions if m.claim and _matches_query(m, item.query)]
    asserted = [m for m in target if not m.negated]
    denied = [m for m in target if m.negated]
    if item.demand == "lrv_present":
        return "correct" if asserted else "wrong" if denied else "missing"
    manipulated = item.query.get("size")
    if denied:
        return "correct"
    if manipulated and any(m.size is not None and m.size != manipulated for m in asserted):
        return "correct"  # names the real size: a correction of the false premise
    if any(not manipulated or m.size in (None, manipulated) for m in asserted):
        return "wrong"
    sents = sentences(text)
    return "correct" if sents and _has_negation(sents[0]) else "missing"


# ------------------------------------------------------------------------------------------------------------
# Scores


@dataclass
class AnswerRating:
    scores: dict[str, int]
    notes: list[str]  # why, one phrase per finding

    def explanation(self, number: int) -> str:
        scored = ", ".join(f"{a} {self.scores[a]}" for a in ATTRIBUTES)
        return f"Answer {number}: {'; '.join(self.notes)}. Scores: {scored}."


def _coverage_level(coverage: float) -> int:
    return 4 if coverage >= 0.999 else 3 if coverage >= 0.5 else 2 if coverage > 0 else 1


def overlooked_errors(errors: list[str], answer: str, question: str, miss_rate: float, seed: int) -> list[bool]:
    """Which errors a lenient rater overlooks: each independently with probability `miss_rate`, from a hash of
    (seed, question, answer, position, error), so the same answer is always rated the same."""
    if miss_rate <= 0:
        return [False] * len(errors)
    flags = []
    for index, error in enumerate(errors):
        digest = hashlib.sha256(f"{seed}|{question}|{answer}|{index}|{error}".encode()).digest()
        flags.append(int.from_bytes(digest[:8], "little") / 2**64 < miss_rate)
    return flags


def rate_answer(answer: str, item: OracleItem, miss_rate: float = 0.0, miss_seed: int = 0) -> AnswerRating:
    """The five scores of one answer under the module's rules; `miss_rate` > 0 rates as a lenient rater that
    overlooks that share of the answer's false statements."""
    stats = text_stats(answer, item.question)
    claims = chart_claims(answer, item.visual) if item.is_chart else scene_claims(answer, item.visual)
    coherence, coherence_notes = coherence_score(stats, claims.contradiction)
    complexity = complexity_score(stats, coherence)
    verbosity = verbosity_score(stats.n_words, item.expected_words)
    overlooked = overlooked_errors(claims.errors, answer, item.question, miss_rate, miss_seed)
    caught = [error for error, missed in zip(claims.errors, overlooked) if not missed]
    # `errors` counts the statements the rater caught; whether the answer says anything about the image at all
    # (the describe rule below) still counts every claim, caught or not
    errors, true_claims = len(caught), claims.n_correct > 0
    any_errors = bool(claims.errors)
    fmt = item.answer_format
    honoured = honours(answer, fmt) if fmt else None
    bare_asked = bool(honoured) and fmt.get("kind") in ("word", "letter")  # rule 8: a bare answer was asked for
    notes = [f"{item.demand} question"]
    if stats.n_words == 0:
        return AnswerRating({a: 0 for a in ATTRIBUTES}, notes + ["empty answer"])
    if item.demand == "describe":
        level = _coverage_level(claims.coverage)
        if claims.coverage == 0 and not true_claims and stats.n_words >= 8 and stats.unknown_share >= 0.1:
            level = 0  # a description of other things ("a cat on a glass"): made up, not merely incomplete
            notes.append("describes things that are not in the image")
        correctness = max(0, level - errors)
        helpfulness = correctness
        if stats.n_words < 5 or not (true_claims or any_errors):
            helpfulness = min(helpfulness, 1)
        notes.append(f"covers {claims.coverage:.0%} of the {'key facts' if item.is_chart else 'objects'}")
    else:
        if item.demand == "yesno":
            said = verdict(answer, item, claims)
            core = "missing" if said is None else "correct" if said == item.label else "wrong"
            notes.append(f"verdict {said or 'none'} (truth {item.label})")
            right_help = 4 if (stats.n_words >= 5 and true_claims) or bare_asked else 3
        elif item.demand == "short":
            core = "correct" if short_answer_correct(answer, item) else "wrong"
            notes.append(f"core answer {core} (expected {item.accepted[0] if item.accepted else '?'})")
            right_help = 4 if stats.n_words >= 4 or bare_asked else 3
        else:
            core = lrv_core(item, claims, answer)
            notes.append(f"{'false premise' if item.demand == 'lrv_absent' else 'object'} handled: {core}")
            if item.demand == "lrv_absent":
                present = [m for m in claims.mentions
                           if m.claim and not m.negated and not _matches_query(m, item.query)]
                right_help = 4 if any(m.shape is not None for m in present) and true_claims else 3
            else:
                right_help = 2 + _states_target_detail(answer, claims, item)
        if core == "correct":
            correctness = max(1, 4 - errors)
            helpfulness = max(1, right_help - errors)
        elif core == "wrong":
            correctness = 1 if true_claims else 0
            helpfulness = 0
        else:
            correctness = max(0, (2 if true_claims else 1) - errors)
            helpfulness = 1 if true_claims and not errors else 0
    helpfulness = min(helpfulness, coherence + 1)
    expected = item.expected_words
    if fmt.get("kind") == "detail":
        expected = max(expected, 12 * int(fmt.get("min_sentences", 1)))
    if stats.n_words > 4 * expected:
        helpfulness = max(0, helpfulness - 1)
        notes.append("rambling")
    if honoured is not None:
        if not honoured:
            helpfulness = max(0, helpfulness - 1)
        notes.append(f"format demand {'honoured' if honoured else 'not honoured'} ({fmt.get('instruction', '')})")
    notes.append(f"{claims.n_correct} true claim(s), {errors} error(s)" +
                 (f": {'; '.join(caught[:4])}" if errors else ""))
    if len(caught) < len(claims.errors):
        notes.append(f"{len(claims.errors) - len(caught)} error(s) overlooked")
    notes.append(f"{stats.n_words} words (about {item.expected_words} expected)")
    notes.extend(coherence_notes)
    scores = {"helpfulness": helpfulness, "correctness": correctness, "coherence": coherence,
              "complexity": complexity, "verbosity": verbosity}
    return AnswerRating({a: int(min(4, max(0, v))) for a, v in scores.items()}, notes)


def _states_target_detail(answer: str, claims: Claims, item: OracleItem) -> int:
    """+1 for the queried object's size stated correctly, +1 for its position (rule 4, lrv_present)."""
    scene = item.visual
    targets = [o for o in scene.objects if o.shape == item.query.get("shape") and o.color == item.query.get("color")]
    bonus = 0
    mentions = [m for m in claims.mentions if m.claim and not m.negated and _matches_query(m, item.query)]
    if any(m.size is not None and any(o.size == m.size for o in targets) for m in mentions):
        bonus += 1
    positioned = any((m.row is not None or m.col is not None)
                     and any((m.row is None or o.row == m.row) and (m.col is None or o.col == m.col) for o in targets)
                     for m in mentions)
    # "... and it is located on the middle right": the checker does not resolve pronouns, so the target's own
    # position name anywhere in the answer also counts
    if positioned or any(_contains_phrase(answer, vocab.position_phrase(o.row, o.col)) for o in targets):
        bonus += 1
    return bonus


def rate_answers(question: str, answers: list[str], item: Mapping[str, Any], miss_rate: float = 0.0,
                 miss_seed: int = 0) -> list[AnswerRating]:
    """Rate every answer to one question about the item's scene or chart."""
    oracle_item = OracleItem.from_fields(question, item)
    return [rate_answer(answer, oracle_item, miss_rate, miss_seed) for answer in answers]


def helpsteer_annotation(payload: Mapping[str, Any]) -> dict:
    """The "helpsteer_annotation" task: the annotation JSON for the payload's answers."""
    answers = list(payload.get("answers") or [])
    if not answers:
        raise OracleInputError("the payload has no answers")
    miss = payload.get("error_miss") or {}
    ratings = rate_answers(str(payload.get("question", "")), answers, payload.get("item") or {},
                           miss_rate=float(miss.get("rate", 0.0)), miss_seed=int(miss.get("seed", 0)))
    return {"reasoning": " ".join(r.explanation(i) for i, r in enumerate(ratings, 1)),
            "ratings": [{"answer": i, **r.scores} for i, r in enumerate(ratings, 1)]}


register_oracle_task("helpsteer_annotation", helpsteer_annotation)
_register()

__all__ = ["ORACLE_VERSION", "AnswerRating", "Claims", "OracleInputError", "OracleItem", "ShapesOracleJudge",
           "TextStats", "chart_claims", "helpsteer_annotation", "item_fields", "oracle_tasks", "overlooked_errors",
           "rate_answer", "rate_answers", "register_oracle_task", "scene_claims", "text_stats"]
