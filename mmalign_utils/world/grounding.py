"""Grounding checker: which objects a text claims, and whether the scene has them.

Rule-based and deliberately precise: it recognises shape nouns (synonyms and plurals from vocab), the colour,
size, number and grid-position words attached to them, and simple negation ("there is no star", "no circles,
squares or stars", "the star is not present"). It is used to filter LLM-written answers, by the oracle judge
and by the CHAIR-like benchmark editions, so when in doubt it records less rather than guessing.

    >>> report = ground("A large red circle sits in the top left corner. There is no star.", scene)
    >>> report.correct, report.hallucinated, report.negated, report.objects_missed
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from mmalign_utils.world import lexicon as lx
from mmalign_utils.world import vocab
from mmalign_utils.world.scenes import Scene

_TOKEN_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+|[.,;:!?()]")
# "star-shaped", "five-star": the only hyphenated forms that matter are looked at through the raw text.


@dataclass
class Token:
    text: str  # lower-cased
    start: int
    end: int
    raw: str


@dataclass
class Mention:
    """One claimed object (or group of objects) in a text."""

    text: str  # the surface text, from the first modifier to the noun
    span: tuple[int, int]  # character offsets into the checked text
    noun: str  # the noun as written, lower-cased ("balls", "objects")
    shape: str | None  # canonical world shape, an out-of-world shape word ("hexagon"), or None for "object"
    color: str | None = None  # canonical colour; may be a colour the world never uses ("pink")
    size: str | None = None
    row: int | None = None  # grid position claimed for it, where stated (either may be None)
    col: int | None = None
    number: int | None = None  # stated count ("two circles" -> 2); None when no number is stated
    plural: bool = False
    negated: bool = False
    # False for mentions that are compared or asked about rather than claimed ("more circles than triangles",
    # "the number of stars", a question): they are neither correct nor hallucinated.
    claim: bool = True
    # token index range [first, last] of the mention, for attaching position phrases; not serialised
    first_tok: int = field(default=-1, repr=False, compare=False)
    last_tok: int = field(default=-1, repr=False, compare=False)
    determined: bool = field(default=False, repr=False, compare=False)  # has an article or number in front

    @property
    def in_world(self) -> bool:
        return self.shape is None or self.shape in vocab.SHAPES

    def to_dict(self) -> dict:
        d = asdict(self)
        for private in ("first_tok", "last_tok", "determined"):
            d.pop(private)
        d["span"] = list(self.span)
        return d


def tokenize(text: str) -> list[Token]:
    return [Token(m.group().lower(), m.start(), m.end(), m.group()) for m in _TOKEN_RE.finditer(text)]


# ----- position phrases ---------------------------------------------------------------------------------------
@dataclass
class _Position:
    first: int  # token indices, inclusive
    last: int
    row: int | None
    col: int | None
    suffix_tok: int = -1  # index of a suffix noun ("corner", "square"), -1 if none


def _core_position(words: list[str], suffix: str | None) -> tuple[int | None, int | None] | None:
    """(row, col) for one or two position words, or None if they do not form a position."""
    if len(words) == 2:
        a, b = words
        if a in lx.ROW_WORDS and b in lx.COL_WORDS:
            return lx.ROW_WORDS[a], lx.COL_WORDS[b]
        if a in lx.ROW_WORDS and b in lx.MID_WORDS:
            return lx.ROW_WORDS[a], 1
        if a in lx.MID_WORDS and b in lx.COL_WORDS:
            return 1, lx.COL_WORDS[b]
        if a in lx.COL_WORDS and b in lx.ROW_WORDS:  # "left top" (rare)
            return lx.ROW_WORDS[b], lx.COL_WORDS[a]
        return None
    (w,) = words
    if w in lx.ROW_WORDS:
        return lx.ROW_WORDS[w], None
    if w in lx.COL_WORDS:
        return None, lx.COL_WORDS[w]
    if w in lx.MID_WORDS:
        if suffix == "row":
            return 1, None
        if suffix == "column":
            return None, 1
        return 1, 1
    return None


def find_positions(tokens: list[Token]) -> list[_Position]:
    """Grid-position phrases: "in the top left corner", "at the top", "on the left side", "center column",
    "top-left". Relational uses ("to the left of the square", "on top of") are not positions."""
    out: list[_Position] = []
    k = 0
    n = len(tokens)
    while k < n:
        start = k
        j = k
        has_prep = False
        if tokens[j].text in lx.POSITION_PREPOSITIONS and j + 1 < n and tokens[j + 1].text == "the":
            has_prep = True
            j += 2
        words = []
        while j < n and tokens[j].text in lx.POSITION_WORDS and len(words) < 2:
            words.append(tokens[j].text)
            j += 1
        if not words:
            k += 1
            continue
        suffix = tokens[j].text if j < n and tokens[j].text in lx.POSITION_SUFFIXES else None
        if suffix == "square" and not has_prep:
            suffix = None  # "the top square" is a square at the top, not a grid cell
        end = j + (1 if suffix else 0)
        core = _core_position(words, suffix)
        if core is None and len(words) == 2:  # e.g. "left middle" handled as "left" then retried
            words = words[:1]
            end = start + (2 if has_prep else 0) + 1
            suffix = None
            core = _core_position(words, None)
        # "of the image" may follow; "of the square" makes it relational ("on the left of the square")
        relational = False
        if end + 1 < n and tokens[end].text == "of":
            nxt = tokens[end + 2] if end + 2 < n and tokens[end + 1].text in ("the", "a", "an") else tokens[end + 1]
            if nxt.text in lx.IMAGE_NOUNS:
                end = tokens.index(nxt) + 1
            else:
                relational = True
        strong = has_prep or suffix is not None or len(words) == 2
        if core is not None and strong and not relational:
            suffix_tok = start + (2 if has_prep else 0) + len(words) if suffix else -1
            out.append(_Position(start, end - 1, core[0], core[1], suffix_tok))
            k = end
        else:
            k = max(k + 1, start + 1)
    return out


# ----- mentions ----------------------------------------------------------------------------------------------
_SINGULAR = {**{w: w for w in vocab.SHAPE_WORDS if not vocab.SHAPE_WORDS[w][1]},
             **{vocab.plural(w): w for w in vocab.SHAPE_WORDS if not vocab.SHAPE_WORDS[w][1]}}


def _noun_at(tokens: list[Token], k: int, text: str) -> tuple[str | None, bool, bool] | None:
    """(shape or None for generic, plural, is_shape_noun) if token k is an object noun in this context."""
    t = tokens[k].text
    nxt = tokens[k + 1].text if k + 1 < len(tokens) else ""
    prv = tokens[k - 1].text if k > 0 else ""
    if t in vocab.SHAPE_WORDS:
        shape, plural = vocab.SHAPE_WORDS[t]
        base = _SINGULAR[t]
        if nxt in lx.NOT_SHAPE_BEFORE.get(base, ()) or prv in lx.NOT_SHAPE_AFTER.get(base, ()):
            return None
        hyphen_before = tokens[k].start > 0 and text[tokens[k].start - 1] == "-"
        if hyphen_before and (prv in lx.NUMBER_WORDS or prv.isdigit() or prv == "all"):
            return None  # "five-star", "all-star"
        if prv in ("to", "will", "would", "should", "could", "can", "must", "might") and not plural:
            return None  # a verb: "to box", "can star"
        return shape, plural, True
    if t in vocab.GENERIC_WORDS:
        return None, vocab.GENERIC_WORDS[t], False
    return None


def _scan_modifiers(tokens: list[Token], k: int) -> tuple[int, dict]:
    """Walk back from the noun at k over its modifiers; return (index of the first modifier, what they say)."""
    colors: list[str] = []
    info: dict = {"colors": colors, "size": None, "number": None, "row": None, "col": None, "shape_adj": None,
                  "comparative": False}
    pos_words: list[str] = []
    j = k - 1
    while j >= 0:
        t = tokens[j].text
        if t in vocab.COLOR_WORDS:
            colors.insert(0, vocab.COLOR_WORDS[t])
        elif t in vocab.SIZE_WORDS:
            info["size"] = info["size"] or vocab.SIZE_WORDS[t]
        elif t in lx.COMPARATIVES:
            info["comparative"] = True
        elif t in lx.NUMBER_WORDS:
            info["number"] = lx.NUMBER_WORDS[t]
        elif t.isdigit() and len(t) < 3:
            info["number"] = int(t)
        elif t in lx.SHAPE_ADJECTIVES:
            info["shape_adj"] = lx.SHAPE_ADJECTIVES[t]
        elif t in lx.POSITION_WORDS:
            pos_words.insert(0, t)
        elif t in lx.ARTICLES or t in lx.FILLER_ADJECTIVES:
            pass
        elif t in ("and", "or", ",") and colors and j > 0 and tokens[j - 1].text in vocab.COLOR_WORDS:
            pass  # colour coordination: "red and blue circles"
        else:
            break
        j -= 1
    first = j + 1
    if pos_words:
        core = _core_position(pos_words[-2:], None)
        if core is not None:
            info["row"], info["col"] = core
    return first, info


def _negated_before(tokens: list[Token], first: int) -> bool:
    """A negator earlier in the same clause (at most 8 tokens back)."""
    j = first - 1
    steps = 0
    while j >= 0 and steps < 8:
        t = tokens[j].text
        if t in lx.NEGATORS:
            after = tokens[j + 1].text if j + 1 < len(tokens) else ""
            return after not in lx.NEGATION_CANCELLERS
        if t in lx.CLAUSE_BREAKS or t in lx.RELATION_STOPS:
            return False
        j -= 1
        steps += 1
    return False


def _negated_after(tokens: list[Token], last: int) -> bool:
    """"the star is not present", "stars are absent", "the star isn't there"."""
    j = last + 1
    window = [t.text for t in tokens[j:j + 5]]
    for i, t in enumerate(window):
        if t in lx.CLAUSE_BREAKS:
            return False
        if t in lx.ABSENCE_WORDS and i <= 2:
            return True
        if t in ("not", "isn't", "aren't", "wasn't", "weren't", "doesn't", "don't", "cannot", "can't"):
            rest = window[i + 1:i + 3]
            return any(w in lx.PRESENCE_WORDS for w in rest) or t in ("doesn't", "don't") and "appear" in rest
    return False


def _predicate_attributes(tokens: list[Token], j: int, position_ends: dict[int, int]) -> tuple[list[str], str | None]:
    """Colours and size stated after a copula starting at token j: "is red", "are large and blue", also past a
    position phrase: "the circle in the top left corner is red"."""
    colors: list[str] = []
    size = None
    n = len(tokens)
    if j in position_ends:
        j = position_ends[j] + 1
    if j < n and tokens[j].text in ("which", "that"):
        j += 1
    if not (j < n and tokens[j].text in lx.COPULAS):
        return colors, size
    j += 1
    while j < n:
        t = tokens[j].text
        if t in lx.NEGATORS:
            return [], None  # "is not red": no positive claim; denials of attributes are not checked
        if t in vocab.COLOR_WORDS:
            colors.append(vocab.COLOR_WORDS[t])
        elif t in vocab.SIZE_WORDS:
            size = vocab.SIZE_WORDS[t]
        elif t in lx.PREDICATE_FILLERS:
            pass
        else:
            break
        j += 1
    return colors, size


def extract_mentions(text: str, skip_proper_nouns: bool = False) -> list[Mention]:
    """Every object mention in a text, in order. A group like "red and blue circles" yields one mention per colour.
    Generic nouns ("object", "shapes") become mentions only with a colour, size, number or shape adjective.
    skip_proper_nouns ignores capitalised phrases mid-sentence ("Red Square"), for texts not about a scene."""
    tokens = tokenize(text)
    positions = find_positions(tokens)
    position_ends = {p.first: p.last for p in positions}
    cell_nouns = {p.suffix_tok for p in positions}  # "in the top left square" names a cell, not a square
    mentions: list[Mention] = []
    for k in range(len(tokens)):
        if k in cell_nouns:
            continue
        found = _noun_at(tokens, k, text)
        if found is None:
            continue
        shape, plural, is_shape_noun = found
        first, info = _scan_modifiers(tokens, k)
        if not is_shape_noun:
            shape = info["shape_adj"]
            if shape is None and not (info["colors"] or info["size"] or info["number"] is not None):
                continue
        if shape is not None and shape not in vocab.SHAPES:
            # out-of-world shapes need an article, number, colour or size, or a plural: "cross" or "crosses"
            # alone is often a verb
            bare = first == k and not info["colors"] and info["size"] is None
            if bare and (not plural or tokens[k].text in ("crosses", "rings")):
                continue
        if skip_proper_nouns and tokens[k].raw[:1].isupper():
            before = text[:tokens[first].start].rstrip()
            if before and before[-1] not in ".!?:\n" and tokens[k - 1].raw[:1].isupper():
                continue
        negated = _negated_before(tokens, first) or _negated_after(tokens, k)
        if info["number"] == 0:
            negated, info["number"] = True, None
        post_colors, post_size = _predicate_attributes(tokens, k + 1, position_ends)
        colors = info["colors"] or post_colors
        size = None if info["comparative"] else (info["size"] or post_size)
        number = info["number"] if len(colors) <= 1 else None
        claim = not _compared(tokens, first) and not _in_question(tokens, k)
        determined = info["number"] is not None or (first < k and tokens[first].text in lx.ARTICLES)
        for color in colors or [None]:
            mentions.append(Mention(
                text=text[tokens[first].start:tokens[k].end], span=(tokens[first].start, tokens[k].end),
                noun=tokens[k].text, shape=shape, color=color, size=size, row=info["row"], col=info["col"],
                number=number, plural=plural, negated=negated, claim=claim, first_tok=first, last_tok=k,
                determined=determined))
    _propagate_list_negation(tokens, mentions)
    _attach_positions(tokens, mentions, positions)
    return mentions


def _compared(tokens: list[Token], first: int) -> bool:
    """"more circles than triangles": both sides are compared, not claimed; so is "the number of stars"."""
    prev = tokens[first - 1].text if first > 0 else ""
    if prev in lx.NON_CLAIM_BEFORE:
        return True
    return prev == "of" and first > 1 and tokens[first - 2].text in ("number", "count")


def _in_question(tokens: list[Token], k: int) -> bool:
    """The sentence holding token k ends with a question mark."""
    for t in tokens[k + 1:]:
        if t.text in (".", "!"):
            return False
        if t.text == "?":
            return True
    return False


def _propagate_list_negation(tokens: list[Token], mentions: list[Mention]) -> None:
    """"no circles, squares or stars" and "no circles and squares" deny all three/both; "no stars and a circle"
    or "no triangles, two stars" deny only the first."""
    for prev, cur in zip(mentions, mentions[1:]):
        if not prev.negated or cur.negated or cur.number is not None or cur.last_tok == prev.last_tok:
            continue
        gap = [t.text for t in tokens[prev.last_tok + 1:cur.first_tok]]
        if not gap:
            continue
        if all(t in lx.NEGATION_LIST_GAP for t in gap) or (gap == ["and"] and not cur.determined):
            cur.negated = True


def _attach_positions(tokens: list[Token], mentions: list[Mention], positions: list[_Position]) -> None:
    """Give each grid-position phrase to the mention it describes: the one right before it ("a circle in the
    top left corner", "the star is at the top") or else the one right after it ("In the center, there is ...")."""
    for pos in positions:
        target = None
        for m in reversed(mentions):
            if m.last_tok < pos.first:
                gap = [t.text for t in tokens[m.last_tok + 1:pos.first]]
                if len(gap) <= 4 and all(t in lx.CONNECT_AFTER for t in gap):
                    target = m
                break
        before = tokens[pos.first - 1].text if pos.first > 0 else "."
        # "In the center, there is ..." or a subject like "The bottom row contains two objects"
        clause_initial = before in lx.CLAUSE_STARTS or (
            before == "the" and tokens[pos.last].text in lx.POSITION_SUFFIXES)
        if target is None and clause_initial:
            for m in mentions:
                if m.first_tok > pos.last:
                    gap = [t.text for t in tokens[pos.last + 1:m.first_tok]]
                    if len(gap) <= 5 and all(t in lx.CONNECT_BEFORE for t in gap):
                        target = m
                    break
        if target is None or target.row is not None or target.col is not None:
            continue
        for m in mentions:  # a colour group ("red and blue circles") shares its noun, hence its position
            if m.last_tok == target.last_tok:
                m.row, m.col = pos.row, pos.col


# ----- grounding against a scene -----------------------------------------------------------------------------
@dataclass
class WrongAttribute:
    mention: Mention
    attribute: str  # "size" | "position"
    claimed: str
    actual: list[str]  # the values the matching objects really have


@dataclass
class NumberClaim:
    mention: Mention
    claimed: int
    actual: int

    @property
    def correct(self) -> bool:
        return self.claimed == self.actual


@dataclass
class GroundingReport:
    mentions: list[Mention]  # every mention found, negated ones included
    correct: list[Mention]  # asserted, and an object with that shape, colour, size and position exists
    hallucinated: list[Mention]  # asserted, but no object has that shape (and stated colour)
    wrong_attributes: list[WrongAttribute]  # the object exists but the stated size/position is wrong
    number_claims: list[NumberClaim]
    negated: list[Mention]  # mentions the text denies ("there is no star")
    false_negations: list[Mention]  # denied, yet present
    objects_covered: list[int]  # scene object indices the text talks about
    objects_missed: list[int]
    n_objects: int = 0

    @property
    def asserted(self) -> list[Mention]:
        return [m for m in self.mentions if m.claim and not m.negated]

    @property
    def hallucination_rate(self) -> float:
        """Hallucinated / asserted mentions (CHAIR_i-like); 0.0 when nothing is asserted."""
        n = len(self.asserted)
        return len(self.hallucinated) / n if n else 0.0

    @property
    def coverage(self) -> float:
        return len(self.objects_covered) / self.n_objects if self.n_objects else 0.0

    @property
    def n_errors(self) -> int:
        """Hallucinations + wrong attributes + wrong numbers + false denials."""
        return (len(self.hallucinated) + len(self.wrong_attributes) + len(self.false_negations)
                + sum(not c.correct for c in self.number_claims))

    def to_dict(self) -> dict:
        return {
            "mentions": [m.to_dict() for m in self.mentions],
            "correct": [m.text for m in self.correct], "hallucinated": [m.text for m in self.hallucinated],
            "wrong_attributes": [{"mention": w.mention.text, "attribute": w.attribute, "claimed": w.claimed,
                                  "actual": w.actual} for w in self.wrong_attributes],
            "number_claims": [{"mention": c.mention.text, "claimed": c.claimed, "actual": c.actual,
                               "correct": c.correct} for c in self.number_claims],
            "negated": [m.text for m in self.negated], "false_negations": [m.text for m in self.false_negations],
            "objects_covered": self.objects_covered, "objects_missed": self.objects_missed,
            "hallucination_rate": self.hallucination_rate, "coverage": self.coverage, "n_errors": self.n_errors,
        }


def _identity_matches(scene: Scene, m: Mention) -> list[int]:
    if m.shape is not None and m.shape not in vocab.SHAPES:
        return []
    if m.color is not None and m.color not in vocab.COLORS:
        return []
    return scene.matching(shape=m.shape, color=m.color)


def _full_matches(scene: Scene, m: Mention) -> list[int]:
    return [i for i in _identity_matches(scene, m)
            if (m.size is None or scene.objects[i].size == m.size)
            and (m.row is None or scene.objects[i].row == m.row) and (m.col is None or scene.objects[i].col == m.col)]


def _position_name(row: int | None, col: int | None) -> str:
    if row is not None and col is not None:
        return vocab.position_phrase(row, col)
    return vocab.ROWS[row] + " row" if row is not None else vocab.COLS[col] + " column"


def ground(text: str, scene: Scene) -> GroundingReport:
    """Check every object claim of `text` against `scene` (see GroundingReport for the categories).

    An object's identity is its shape plus, where stated, its colour: "a green circle" when only a red circle
    exists is a hallucinated object. Size and position are attributes: "a small red circle" when the red circle
    is large is a wrong attribute, not a hallucination. A mention with a stated number ("two circles") is also
    checked as a count over objects with the stated shape, colour, size and position."""
    mentions = extract_mentions(text)
    correct, hallucinated, wrong, numbers, negated, false_neg = [], [], [], [], [], []
    claims_for_coverage: list[tuple[Mention, list[int]]] = []
    for m in mentions:
        if not m.claim:
            continue
        if m.negated:
            negated.append(m)
            if _full_matches(scene, m):
                false_neg.append(m)
            continue
        identity = _identity_matches(scene, m)
        if m.number is not None and m.in_world and (m.color is None or m.color in vocab.COLORS):
            numbers.append(NumberClaim(m, m.number, len(_full_matches(scene, m))))
        if not identity:
            hallucinated.append(m)
            continue
        full = _full_matches(scene, m)
        if full:
            correct.append(m)
            claims_for_coverage.append((m, full))
            continue
        claims_for_coverage.append((m, identity))
        objs = [scene.objects[i] for i in identity]
        size_ok = m.size is None or any(o.size == m.size for o in objs)
        if not size_ok:
            wrong.append(WrongAttribute(m, "size", m.size, sorted({o.size for o in objs})))
        # position is judged among the objects of the stated size when there are any, else among all candidates
        pool = [o for o in objs if o.size == m.size] if m.size is not None and size_ok else objs
        if not any((m.row is None or o.row == m.row) and (m.col is None or o.col == m.col) for o in pool):
            wrong.append(WrongAttribute(m, "position", _position_name(m.row, m.col),
                                        sorted({o.position for o in pool})))
    covered = _cover(claims_for_coverage)
    return GroundingReport(mentions=mentions, correct=correct, hallucinated=hallucinated, wrong_attributes=wrong,
                           number_claims=numbers, negated=negated, false_negations=false_neg,
                           objects_covered=sorted(covered),
                           objects_missed=[i for i in range(len(scene.objects)) if i not in covered],
                           n_objects=len(scene.objects))


def _cover(claims: list[tuple[Mention, list[int]]]) -> set[int]:
    """Greedy assignment of mentions to objects: a singular mention covers one object, "two circles" two, a plain
    plural all that match. The most specific mentions choose first."""
    covered: set[int] = set()
    for m, candidates in sorted(claims, key=lambda mc: len(mc[1])):
        capacity = m.number if m.number is not None else (len(candidates) if m.plural else 1)
        for i in candidates:
            if capacity <= 0:
                break
            if i not in covered:
                covered.add(i)
                capacity -= 1
    return covered


# ----- scene talk -------------------------------------------------------------------------------------------------
_GEOMETRIC = {"circle", "square", "triangle", "star", "rectangle", "dot", "disc", "disk", "quadrilateral",
              "hexagon", "pentagon", "octagon", "diamond", "rhombus", "trapezoid", "oval", "ellipse", "polygon",
              "parallelogram"}


def _singular(noun: str) -> str:
    for cand in (noun, noun[:-1], noun[:-2]):
        if cand in vocab.SHAPE_WORDS and not vocab.SHAPE_WORDS[cand][1]:
            return cand
    return noun


def scene_talk_signals(text: str) -> dict[str, int]:
    """Counts of the cues is_scene_talk combines (for inspection and tuning)."""
    tokens = tokenize(text)
    mentions = [m for m in extract_mentions(text, skip_proper_nouns=True) if m.shape is not None]
    geometric = [m for m in mentions if _singular(m.noun) in _GEOMETRIC]
    return {
        "colored_geometric": sum(m.color is not None for m in geometric),
        "colored_everyday": sum(m.color is not None for m in mentions if _singular(m.noun) in lx.EVERYDAY_SHAPE_NOUNS),
        "positioned_geometric": sum(m.row is not None or m.col is not None for m in geometric),
        "shape_mentions": len(mentions),
        "grid_positions": len(find_positions(tokens)),
        "image_references": sum(t.text in lx.IMAGE_NOUNS for t in tokens),
    }


def is_scene_talk(text: str) -> bool:
    """Does the text talk about ShapesWorld-like scenes (coloured geometric shapes, shapes at grid positions)?

    Conservative, for spotting text-only answers that collapsed into scene talk: a colour on a geometric shape
    word ("a blue and purple circle") or a geometric shape at a grid position ("a star in the top right corner")
    is enough; a colour on an everyday noun ("a red ball") needs a second cue; colour words alone ("red wine"),
    bare geometry ("a circle has no corners") or a position alone ("click the top right corner") are not."""
    s = scene_talk_signals(text)
    if s["colored_geometric"] or s["positioned_geometric"]:
        return True
    if s["colored_everyday"] and (s["shape_mentions"] >= 2 or s["grid_positions"] or s["image_references"]):
        return True
    return False
