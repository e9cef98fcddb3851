"""Run the ShapesWorld benchmark editions on a model and turn the scores into results.csv rows.

    from mmalign_utils.bench.shapes.runner import evaluate, to_result_rows
    scores = evaluate(model, processor, editions=["shapes-pope", "shapes-mmbench"], n_per_split=100, seed=0)
    append_results(ctx.results_csv, to_result_rows(scores, "toy-llava", "08_eval", seed=0, profile="toy"))

Answering follows each original benchmark's format: the prompts come from the official modules'
`build_model_prompts` (POPE's question + LLaVA's short-answer suffix, MMBench's single-letter prompt, the bare
question for the open-ended sets). Closed questions (yes/no, multiple choice) are answered by default by scoring
the options in one forward pass (`generate.score_options`: the option whose first token is most likely, over
"Yes"/"No" and "yes"/"no", or the letters); `answer_mode="generate"` generates greedily instead, as the originals
did, and the official scorer parses the text. Open questions are always answered by greedy generation. Options
are scored in the order of their first token's id, so that tied logits resolve as greedy decoding resolves them
(see `in_first_token_order`).
"""
from __future__ import annotations

import inspect
import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from mmalign_utils.bench.shapes.common import IMAGE_SIZE, AnswerRequest, scene_image
from mmalign_utils.bench.shapes.editions import OFFLINE_EDITIONS, get_edition
from mmalign_utils.bench.shapes.oracle_review import is_oracle
from mmalign_utils.bench.shapes.stats import bootstrap
from mmalign_utils.generate import Conversation, GenerationSettings, generate, score_options
from mmalign_utils.judges.base import Judge
from mmalign_utils.results import ResultRow

ANSWER_MODES = ("score_options", "generate")
CLOSED_MAX_NEW_TOKENS = 32  # yes/no and letters; generation stops at the end-of-turn token anyway
OPEN_MAX_NEW_TOKENS = 256


# ------------------------------------------------------------------------------------------------ answering


class _Images:
    """Renders each scene once per run."""

    def __init__(self, image_size: int):
        self.image_size = image_size
        self._cache: dict[int, Any] = {}

    def __call__(self, scene: dict | None):
        if scene is None:
            return None
        key = int(scene["seed"])
        if key not in self._cache:
            self._cache[key] = scene_image(scene, self.image_size)
        return self._cache[key]


def _conversation(request: AnswerRequest, images: _Images) -> Conversation:
    return Conversation.user(request.text, images(request.scene))


def in_first_token_order(processor, options: list[str], owner: list[str]) -> tuple[list[str], list[str]]:
    """Options (and the choice each stands for) sorted by the id of their first token.

    `score_options` takes the first maximum among the options' logits, greedy decoding the first maximum over
    the whole vocabulary, i.e. the lowest token id. Low-precision logits tie often (bf16 has steps of 0.25 near a
    logit of 34: on the smoke toy LLaVA a third of the yes/no logits were exactly equal), so only options in
    token-id order make a tie go where greedy decoding goes."""
    tokenizer = getattr(processor, "tokenizer", processor)
    if not callable(tokenizer):
        return options, owner
    first = [(tokenizer(o, add_special_tokens=False)["input_ids"] or [-1])[0] for o in options]
    order = sorted(range(len(options)), key=lambda i: first[i])
    return [options[i] for i in order], [owner[i] for i in order]


def _answer_closed_by_scoring(model, processor, requests: list[AnswerRequest], images: _Images, batch_size: int,
                              progress: bool, share_prefix: bool = True) -> dict[Any, str]:
    answers: dict[Any, str] = {}
    groups: dict[tuple, list[AnswerRequest]] = defaultdict(list)
    for r in requests:
        groups[(r.choices, tuple(r.choice_aliases.items()))].append(r)
    for (choices, aliases), group in groups.items():
        spelled = list(choices) + [a for _, spellings in aliases for a in spellings]
        meant = list(choices) + [c for c, spellings in aliases for _ in spellings]
        options, owner = in_first_token_order(processor, spelled, meant)
        convs = [_conversation(r, images) for r in group]
        try:
            picks = score_options(model, processor, convs, options, batch_size=batch_size, progress=progress,
                                  share_prefix=share_prefix)
        except ValueError:  # an alias shares its first token with a choice: compare the choices alone
            options, owner = in_first_token_order(processor, list(choices), list(choices))
            picks = score_options(model, processor, convs, options, batch_size=batch_size, progress=progress,
                                  share_prefix=share_prefix)
        for r, pick in zip(group, picks):
            answers[r.id] = owner[pick]
    return answers


def _answer_by_generation(model, processor, requests: list[AnswerRequest], images: _Images, batch_size: int,
                          default_max_new_tokens: int, seed: int, progress: bool) -> dict[Any, Any]:
    """Greedy (or, for requests with a temperature, seeded sampled) answers; follow-up turns are asked after the
    model's own earlier answers, as FastChat does for MT-Bench turn 2."""
    answers: dict[Any, Any] = {}
    groups: dict[tuple, list[AnswerRequest]] = defaultdict(list)
    for r in requests:
        groups[(r.temperature, r.max_new_tokens or default_max_new_tokens)].append(r)
    for (temperature, max_new_tokens), group in groups.items():
        settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size,
                                      seed=seed)
        convs = [_conversation(r, images) for r in group]
        turns: list[list[str]] = [[] for _ in group]
        n_turns = 1 + max(len(r.followups) for r in group)
        for turn in range(n_turns):
            active = [i for i, r in enumerate(group) if turn <= len(r.followups)]
            if turn > 0:
                for i in active:
                    convs[i].messages += [{"role": "assistant", "content": turns[i][-1]},
                                          {"role": "user", "content": group[i].followups[turn - 1]}]
            texts = generate(model, processor, [convs[i] for i in active], settings, progress=progress)
            for i, text in zip(active, texts):
                turns[i].append(text)
        for r, said in zip(group, turns):
            answers[r.id] = said if r.followups else said[0]
    return answers


def answer_requests(model, processor, requests: Sequence[AnswerRequest], answer_mode: str = "score_options",
                    batch_size: int = 16, closed_max_new_tokens: int = CLOSED_MAX_NEW_TOKENS,
                    open_max_new_tokens: int = OPEN_MAX_NEW_TOKENS, image_size: int = IMAGE_SIZE, seed: int = 0,
                    progress: bool = False, share_prefix: bool = True) -> dict[Any, Any]:
    """{request id: answer text} (a list of turn texts for requests with follow-ups). `share_prefix`: option
    scoring runs the prompt prefix shared by questions about one image once (generate.answer_logits)."""
    if answer_mode not in ANSWER_MODES:
        raise ValueError(f"answer_mode must be one of {ANSWER_MODES}, got {answer_mode!r}")
    images = _Images(image_size)
    closed = [r for r in requests if r.choices and not r.followups]
    open_ = [r for r in requests if not (r.choices and not r.followups)]
    answers: dict[Any, Any] = {}
    if closed and answer_mode == "score_options":
        answers.update(_answer_closed_by_scoring(model, processor, closed, images, batch_size, progress,
                                                 share_prefix))
    elif closed:
        answers.update(_answer_by_generation(model, processor, closed, images, batch_size, closed_max_new_tokens,
                                             seed, progress))
    if open_:
        answers.update(_answer_by_generation(model, processor, open_, images, batch_size, open_max_new_tokens, seed,
                                             progress))
    return answers


# ------------------------------------------------------------------------------------------------ evaluate


def _split_options(edition, options: Mapping[str, Any]) -> tuple[dict, dict]:
    """Route an edition's options to its build or score function by parameter name."""
    build_params = set(inspect.signature(edition.build).parameters)
    score_params = set(inspect.signature(edition.score).parameters)
    build, score = {}, {}
    for key, value in options.items():
        if key in build_params:
            build[key] = value
        elif key in score_params:
            score[key] = value
        else:
            raise ValueError(f"{edition.name}: unknown option {key!r}; build takes {sorted(build_params)}, score "
                             f"takes {sorted(score_params)}")
    return build, score


def _answer_description(edition, requests: Sequence[AnswerRequest], answer_mode: str, closed_max: int,
                        open_max: int) -> str:
    closed = any(r.choices for r in requests)
    open_ = any(not r.choices for r in requests)
    parts = []
    if closed:
        parts.append("closed: option scoring (first token)" if answer_mode == "score_options"
                     else f"closed: greedy generation, {closed_max} new tokens")
    if open_:
        sampled = any(r.temperature > 0 for r in requests)
        parts.append(f"open: {'per-category temperature' if sampled else 'greedy'} generation, "
                     f"up to {max((r.max_new_tokens or open_max) for r in requests if not r.choices)} new tokens")
    return "; ".join(parts)


def evaluate(model, processor, editions: Sequence[str] = OFFLINE_EDITIONS,
             n_per_split: int | None | Mapping[str, int | None] = None, seed: int = 0, judge: Judge | None = None,
             answer_mode: str = "score_options", batch_size: int = 16,
             closed_max_new_tokens: int = CLOSED_MAX_NEW_TOKENS, open_max_new_tokens: int = OPEN_MAX_NEW_TOKENS,
             image_size: int = IMAGE_SIZE, exclude_keys: set | None = None,
             options: Mapping[str, Mapping[str, Any]] | None = None, progress: bool = False) -> dict[str, dict]:
    """Build, answer and score each edition. Returns {edition name: score dict}.

    n_per_split: one number for every edition, a {edition: n} mapping, or None for each edition's default (see
    `Edition.n_meaning`). judge: None uses the ShapesWorld oracle for the open-ended editions; another judge (an
    LLM) replaces it there and is required by text-mtbench / text-alpacaeval. options: per-edition keyword
    arguments for its build or score function, e.g. {"text-alpacaeval": {"references": {...}}}.
    Each score dict holds the edition's `metrics` (for `to_result_rows`), the official scorer's dict under
    `official`, the answers, the answer mode and timings.
    """
    if answer_mode not in ANSWER_MODES:
        raise ValueError(f"answer_mode must be one of {ANSWER_MODES}, got {answer_mode!r}")
    options = options or {}
    resolved = [get_edition(name) for name in editions]
    for ed in resolved:
        if ed.judge == "llm" and is_oracle(judge):
            raise ValueError(f"{ed.name} needs an LLM judge (pass judge=make_judge('gemini:...') or leave the edition "
                             f"out); the ShapesWorld oracle cannot grade free text")
    results: dict[str, dict] = {}
    for ed in resolved:
        n = n_per_split.get(ed.name, ed.default_n) if isinstance(n_per_split, Mapping) else \
            (ed.default_n if n_per_split is None else n_per_split)
        build_opts, score_opts = _split_options(ed, options.get(ed.name, {}))
        started = time.perf_counter()
        items = ed.build(n, seed, exclude_keys=exclude_keys, **build_opts)
        requests = ed.requests(items)
        answers = answer_requests(model, processor, requests, answer_mode, batch_size, closed_max_new_tokens,
                                  open_max_new_tokens, image_size, seed, progress)
        answered = time.perf_counter()
        result = ed.score(items, answers, judge=None if ed.judge == "none" else judge, **score_opts)
        how = _answer_description(ed, requests, answer_mode, closed_max_new_tokens, open_max_new_tokens)
        result["protocol"] = f"{result['protocol']}; {how}"
        result.update(answer_mode=answer_mode, n_per_split=n, seed=seed, n_items=len(items),
                      n_requests=len(requests), seconds_answering=answered - started,
                      seconds_scoring=time.perf_counter() - answered, answers=answers)
        results[ed.name] = result
    return results


def to_result_rows(scores: Mapping[str, dict], model_name: str, notebook: str, seed: int = 0, profile: str = "toy",
                   n_boot: int = 2000) -> list[ResultRow]:
    """One ResultRow per reported metric: benchmark = edition name ("shapes-pope"), the official value, n, and a
    95% percentile bootstrap CI over items where per-item values exist (NaN otherwise)."""
    rows = []
    for result in scores.values():
        for m in result["metrics"]:
            low = high = math.nan
            if m.get("item_values") is not None and m.get("stat"):
                _, low, high = bootstrap(m["item_values"], m["stat"], m.get("scale", 1.0), n_boot=n_boot, seed=seed)
            rows.append(ResultRow(notebook=notebook, model=model_name, benchmark=result["benchmark"],
                                  split=m["split"], metric=m["metric"], value=m["value"], n=m["n"], ci_low=low,
                                  ci_high=high, seed=seed, profile=profile, protocol=result["protocol"],
                                  judge=result.get("judge") or ""))
    return rows
