"""Chart families (SciGraphQA analog): "chart" (single questions), and chart versions of "describe" and
"conversation". Every question starts with context naming the title (text is not legible at 96 px); questions
about labels also give the colour key."""
from __future__ import annotations

import random

from mmalign_utils.world.charts import Chart
from mmalign_utils.world.drafts import Draft, Infeasible, pick, template
from mmalign_utils.world.phrasing import capitalize, join_words, number_word, ordinal
from mmalign_utils.world.qa_long import conversation_from_turns


def _context(chart: Chart, rng: random.Random, with_key: bool = False) -> str:
    if chart.kind == "bar":
        ctx = template(rng, ('The chart "{t}" shows one bar per {e}.', 'This bar chart is titled "{t}".',
                             'Consider the bar chart "{t}".'), t=chart.title, e=chart.entity)
        return ctx + (f" In it, {chart.color_key()}." if with_key else "")
    lines = "one line" if len(chart.series) == 1 else "two lines"
    ctx = template(rng, ('The chart "{t}" plots {l} over {u}s.', 'This line chart is titled "{t}".',
                         'Consider the line chart "{t}".'), t=chart.title, l=lines, u=chart.x_unit)
    return ctx + (f" In it, the {chart.color_key().replace(' is ', ' line is ')}." if with_key else "")


def _draft(chart: Chart, rng: random.Random, core: str, short: str, detail: str, extra: dict,
           label: str | None = None, with_key: bool = False, accepted: list[str] | None = None) -> Draft:
    question = f"{_context(chart, rng, with_key)} {core}"
    return Draft(question, short, detail, label=label,
                 extra={**extra, "core_question": core, "with_key": with_key, "accepted": accepted or [short]})


def _need(chart: Chart, kind: str) -> None:
    if chart.kind != kind:
        raise Infeasible(f"needs a {kind} chart")


# ----- bar charts ----------------------------------------------------------------------------------------------
def _tallest(chart: Chart, rng: random.Random) -> Draft:
    _need(chart, "bar")
    tall = rng.random() < 0.6
    s = chart.tallest() if tall else chart.shortest()
    word = "tallest" if tall else "shortest"
    core = template(rng, ("Which color is the {w} bar?", "What color is the {w} bar?",
                          "Which bar is the {w}? Answer with its color."), w=word)
    detail = f"The {s.color} bar is the {word} of the {number_word(len(chart.series))} bars."
    return _draft(chart, rng, core, s.color, detail, {"subtype": f"bar_{word}_color"})


def _tallest_label(chart: Chart, rng: random.Random) -> Draft:
    _need(chart, "bar")
    tall = rng.random() < 0.6
    s = chart.tallest() if tall else chart.shortest()
    word = "highest" if tall else "lowest"
    core = f"Which {chart.entity} has the {word} value?"
    detail = f"{s.label} has the {word} value: its bar, the {s.color} one, is the " \
             f"{'tallest' if tall else 'shortest'} in the chart."
    return _draft(chart, rng, core, s.label, detail, {"subtype": f"bar_{word}_label"}, with_key=True,
                  accepted=[s.label.lower()])


def _n_bars(chart: Chart, rng: random.Random) -> Draft:
    _need(chart, "bar")
    n = len(chart.series)
    core = template(rng, ("How many bars are in the chart?", "How many bars does the chart show?"))
    colors = join_words([s.color for s in chart.series])
    return _draft(chart, rng, core, str(n), f"The chart has {number_word(n)} bars: {colors}, from left to right.",
                  {"subtype": "bar_count"}, accepted=[str(n), number_word(n)])


def _compare(chart: Chart, rng: random.Random) -> Draft:
    _need(chart, "bar")
    a, b = rng.sample(list(chart.series), 2)
    higher = a if a.values[0] > b.values[0] else b
    if rng.random() < 0.5:
        truth = higher is a
        core = f"Is the {a.color} bar taller than the {b.color} bar?"
        detail = f"{'Yes' if truth else 'No'}, the {higher.color} bar is the taller of the two."
        label = "yes" if truth else "no"
        return _draft(chart, rng, core, label, detail, {"subtype": "bar_compare_yesno", "colors": [a.color, b.color]},
                      label=label)
    core = f"Which bar is higher, the {a.color} one or the {b.color} one?"
    detail = f"The {higher.color} bar is higher than the {(b if higher is a else a).color} one."
    return _draft(chart, rng, core, higher.color, detail,
                  {"subtype": "bar_compare_which", "colors": [a.color, b.color]})


def _count_taller(chart: Chart, rng: random.Random) -> Draft:
    _need(chart, "bar")
    ref = rng.choice(chart.series)
    taller = [s for s in chart.series if s.values[0] > ref.values[0]]
    core = f"How many bars are taller than the {ref.color} bar?"
    if taller:
        detail = f"{capitalize(number_word(len(taller)))}: the {join_words([s.color for s in taller])} " \
                 f"bar{'s are' if len(taller) > 1 else ' is'} taller than the {ref.color} bar."
    else:
        detail = f"None: the {ref.color} bar is the tallest."
    return _draft(chart, rng, core, str(len(taller)), detail, {"subtype": "bar_count_taller", "color": ref.color},
                  accepted=[str(len(taller)), number_word(len(taller))])


# ----- line charts ---------------------------------------------------------------------------------------------
def _the_line(chart: Chart, color: str) -> str:
    return "the line" if len(chart.series) == 1 else f"the {color} line"


def _trend(chart: Chart, rng: random.Random) -> Draft:
    _need(chart, "line")
    s = rng.choice(chart.series)
    trend = chart.trend(s)
    line = _the_line(chart, s.color)
    core = template(rng, ("Does {l} go up or down overall?", "Is {l} trending up or down?",
                          "What is the overall trend of {l}: up or down?"), l=line)
    detail = f"{capitalize(line)} goes {trend} overall: it starts {'low' if trend == 'up' else 'high'} and ends " \
             f"{'high' if trend == 'up' else 'low'}."
    accepted = ["up", "upward", "upwards", "increasing", "rising"] if trend == "up" else \
        ["down", "downward", "downwards", "decreasing", "falling"]
    return _draft(chart, rng, core, trend, detail, {"subtype": "line_trend", "color": s.color}, accepted=accepted)


def _n_points(chart: Chart, rng: random.Random) -> Draft:
    _need(chart, "line")
    s = rng.choice(chart.series)
    n = chart.n_points
    core = f"How many data points does {_the_line(chart, s.color)} have?"
    return _draft(chart, rng, core, str(n), f"{capitalize(_the_line(chart, s.color))} has {number_word(n)} points.",
                  {"subtype": "line_points", "color": s.color}, accepted=[str(n), number_word(n)])


def _last_vs_first(chart: Chart, rng: random.Random) -> Draft:
    _need(chart, "line")
    s = rng.choice(chart.series)
    truth = s.values[-1] > s.values[0]
    line = _the_line(chart, s.color)
    core = f"Is the last point of {line} higher than its first point?"
    detail = f"{'Yes' if truth else 'No'}, {line} ends {'higher' if truth else 'lower'} than it starts."
    label = "yes" if truth else "no"
    return _draft(chart, rng, core, label, detail, {"subtype": "line_last_vs_first", "color": s.color}, label=label)


def _which_end(chart: Chart, rng: random.Random) -> Draft:
    _need(chart, "line")
    if len(chart.series) != 2:
        raise Infeasible("needs two lines")
    a, b = chart.series
    end = rng.random() < 0.6
    k = -1 if end else 0
    top = a if a.values[k] > b.values[k] else b
    word = "ends" if end else "starts"
    core = f"Which line {word} higher, the {a.color} one or the {b.color} one?"
    detail = f"The {top.color} line {word} higher than the {(b if top is a else a).color} line."
    return _draft(chart, rng, core, top.color, detail, {"subtype": f"line_{word}_higher"})


def _peak(chart: Chart, rng: random.Random) -> Draft:
    _need(chart, "line")
    s = rng.choice(chart.series)
    k = chart.peak_index(s)
    line = _the_line(chart, s.color)
    core = f"At which point (first, second, ...) does {line} reach its highest value?"
    accepted = [ordinal(k), str(k + 1), f"{ordinal(k)} point"] + (["last"] if k == chart.n_points - 1 else [])
    detail = f"{capitalize(line)} is highest at its {ordinal(k)} point" + \
             (", the last one." if k == chart.n_points - 1 else ".")
    return _draft(chart, rng, core, ordinal(k), detail, {"subtype": "line_peak", "color": s.color}, accepted=accepted)


def _trend_label(chart: Chart, rng: random.Random) -> Draft:
    _need(chart, "line")
    ups = [s for s in chart.series if chart.trend(s) == "up"]
    if len(chart.series) != 2 or len(ups) != 1:
        raise Infeasible("needs two lines with exactly one going up")
    core = f"Which {chart.entity} shows an upward trend?"
    s = ups[0]
    detail = f"{s.label} (the {s.color} line) goes up overall, while the other line goes down."
    return _draft(chart, rng, core, s.label, detail, {"subtype": "line_trend_label"}, with_key=True,
                  accepted=[s.label.lower()])


def chart_qa(chart: Chart, rng: random.Random) -> Draft:
    if chart.kind == "bar":
        return pick(rng, [(0.25, _tallest), (0.15, _tallest_label), (0.15, _n_bars), (0.3, _compare),
                          (0.15, _count_taller)], chart)
    return pick(rng, [(0.3, _trend), (0.1, _n_points), (0.15, _last_vs_first), (0.2, _which_end), (0.15, _peak),
                      (0.1, _trend_label)], chart)


def chart_describe(chart: Chart, rng: random.Random) -> Draft:
    q = f'{_context(chart, rng)} {rng.choice(("Describe this chart in detail.", "What does this chart show?"))}'
    if chart.kind == "bar":
        colors = join_words([s.color for s in chart.series])
        short = f"A bar chart with {number_word(len(chart.series))} bars; the {chart.tallest().color} one is tallest."
        detail = (f'This is a bar chart titled "{chart.title}" with {number_word(len(chart.series))} bars. From left '
                  f"to right they are {colors}. The {chart.tallest().color} bar is the tallest and the "
                  f"{chart.shortest().color} bar is the shortest.")
    else:
        parts = [f"The {s.color} line goes {chart.trend(s)} overall and peaks at its {ordinal(chart.peak_index(s))} "
                 f"point." for s in chart.series]
        short = f"A line chart with {number_word(len(chart.series))} line{'s' if len(chart.series) > 1 else ''}."
        detail = (f'This is a line chart titled "{chart.title}" with {number_word(len(chart.series))} '
                  f"line{'s' if len(chart.series) > 1 else ''} of {number_word(chart.n_points)} points"
                  f"{' each' if len(chart.series) > 1 else ''}. "
                  + " ".join(parts))
    return Draft(q, short, detail, extra={"subtype": "chart_describe", "accepted": []})


def chart_conversation(chart: Chart, rng: random.Random) -> Draft:
    """Two or three chart questions; only the first carries the title context, except questions about labels,
    which repeat it with the colour key (SciGraphQA is multi-turn)."""
    drafts, seen = [], set()
    for _ in range(30):
        d = chart_qa(chart, rng)
        if d.extra["subtype"] in seen:  # one question per kind, so turns do not repeat each other
            continue
        seen.add(d.extra["subtype"])
        if drafts and not d.extra["with_key"]:  # a later turn needs the colour key again, not the title
            d.question = d.extra["core_question"]
        drafts.append(d)
        if len(drafts) == 3:
            break
    if len(drafts) < 2:
        raise Infeasible("fewer than two distinct chart questions")
    return conversation_from_turns(drafts[: rng.choice((2, 3))])
