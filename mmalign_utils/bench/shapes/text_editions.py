"""Text-only editions: the verifiable-instruction suite, and MT-Bench- / AlpacaEval-style judged sets built from
its prompts (the judged ones only when an LLM judge is configured; the ShapesWorld oracle cannot grade prose).

- textsuite: `textsuite.load_text_suite("heldout")` (the first `n_per_split` prompts, all when None), one
  greedy answer each, scored by `textsuite.score_suite`: prompt/instruction-level strict and loose accuracy.
  No judge. This is the offline stand-in for the paper's text columns.
- text-mtbench ("MT-Bench-style, textsuite prompts"): turn 1 = a textsuite prompt, turn 2 = a follow-up of ours
  asking to rework the first answer; generated with FastChat's per-category temperature (our categories are
  none of FastChat's, so 0.7, sampled, seeded), scored by `mtbench.score` (1-10 per turn, headline overall).
  Judge prompts: FastChat's `judge_prompts.jsonl` when passed as `judge_prompts=`, else ours below (same
  names, placeholders and [[rating]] format).
- text-alpacaeval ("AlpacaEval-style, textsuite prompts"): the model's answer against a reference answer for the
  same prompt (e.g. the base LLM's, passed as `references={prompt id: text}`), scored by `alpacaeval.score`
  (protocol alpaca_eval_gpt4: a ranking reply, AlpacaEval's seeded order swap; headline win rate %). Annotator
  prompt: AlpacaEval's when passed as `annotator_prompt=`, else ours below.
Neither judged set is MT-Bench or AlpacaEval: their numbers are not comparable with the paper's.
"""
from __future__ import annotations

from collections.abc import Mapping

from mmalign_utils.bench import alpacaeval, mtbench
from mmalign_utils.bench.shapes.common import AnswerRequest, edition_score, metric
from mmalign_utils.judges.base import Judge
from mmalign_utils.textsuite import load_text_suite, score_suite, suite_protocol

TEXTSUITE = "textsuite"
MTBENCH = "text-mtbench"
ALPACAEVAL = "text-alpacaeval"
MAX_NEW_TOKENS = 512  # the suite's longest length constraints ask for about 300 words

FOLLOW_UPS = (
    "Now rewrite your answer so that it is shorter, in at most three sentences.",
    "Please give the same answer again as a numbered list.",
    "Explain your answer once more to a ten-year-old.",
    "Add one concrete example to your answer.",
)

# Our judge prompts (FastChat's are user-supplied): the same names, placeholders and output format.
_SYSTEM = ("You are a careful, impartial judge of AI assistant answers. Judge helpfulness, relevance, accuracy, "
           "depth and clarity, and whether the answer follows every instruction in the question. Begin with a short "
           "explanation, then give a rating from 1 to 10 in exactly this format: \"[[rating]]\", e.g. \"[[5]]\".")
OUR_MTBENCH_PROMPTS = {
    "single-v1": {"name": "single-v1", "system_prompt": _SYSTEM,
                  "prompt_template": "[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
                                     "[The End of Assistant's Answer]"},
    "single-v1-multi-turn": {
        "name": "single-v1-multi-turn", "system_prompt": _SYSTEM + " Rate only the assistant's second answer.",
        "prompt_template": "<|The Start of the Conversation|>\n### User:\n{question_1}\n\n### Assistant:\n{answer_1}"
                           "\n\n### User:\n{question_2}\n\n### Assistant:\n{answer_2}\n<|The End of the "
                           "Conversation|>"},
}
OUR_ANNOTATOR_PROMPT = (
    "<|im_start|>system\nYou compare two AI assistant outputs for the same instruction and rank them by quality: "
    "helpfulness, accuracy, and how well each follows the instruction.<|im_end|>\n"
    "<|im_start|>user\nInstruction:\n{instruction}\n\nOutput of model_1:\n{output_1}\n\nOutput of model_2:\n"
    "{output_2}\n\nReply with a Python list of two dicts ranking the models, best first, and nothing else, e.g. "
    "[{'model': 'model_2', 'rank': 1}, {'model': 'model_1', 'rank': 2}]<|im_end|>")


def _prompts(n_per_split: int | None):
    prompts = load_text_suite("heldout")
    return prompts if n_per_split is None else prompts[:n_per_split]


# ------------------------------------------------------------------------------------------------ textsuite


def build_textsuite(n_per_split: int | None = None, seed: int = 0, exclude_keys: set | None = None) -> list[dict]:
    return [{"id": p.id, "question": p.prompt, "category": p.category, "prompt": p} for p in _prompts(n_per_split)]


def requests_textsuite(items: list[dict]) -> list[AnswerRequest]:
    return [AnswerRequest(id=it["id"], text=it["question"], max_new_tokens=MAX_NEW_TOKENS) for it in items]


def score_textsuite(items: list[dict], answers: dict, judge: Judge | None = None) -> dict:
    suite = score_suite([it["prompt"] for it in items], {it["id"]: answers.get(it["id"]) for it in items})
    metrics = []
    for mode in ("strict", "loose"):
        per_prompt = suite.prompt_values(mode)
        metrics.append(metric("heldout", f"prompt_{mode}_acc", suite.prompt_accuracy(mode), len(per_prompt),
                              per_prompt, "mean"))
        per_instruction = [[sum(v), len(v)] for v in suite.instruction_values(mode)]
        metrics.append(metric("heldout", f"instruction_{mode}_acc", suite.instruction_accuracy(mode),
                              len(per_prompt), per_instruction, "ratio"))
    official = {"summary": suite.summary(), "by_instruction_type": suite.by_instruction_type(),
                "records": suite.records}
    return edition_score(TEXTSUITE, suite_protocol(), "", "prompt_strict_acc", metrics, official)


# ------------------------------------------------------------------------------------------------ MT-Bench-style


def build_mtbench(n_per_split: int | None = None, seed: int = 0, exclude_keys: set | None = None) -> list[dict]:
    items = []
    for k, p in enumerate(_prompts(n_per_split)):
        if p.category in mtbench.NEED_REF_CATS:
            raise ValueError(f"{MTBENCH}: prompt {p.id} has category {p.category!r}, which MT-Bench grades against "
                             "a reference answer we do not have")
        items.append({"id": p.id, "category": p.category, "turns": [p.prompt, FOLLOW_UPS[k % len(FOLLOW_UPS)]],
                      "reference": None, "image": None})
    return items


def requests_mtbench(items: list[dict]) -> list[AnswerRequest]:
    return [AnswerRequest(id=it["id"], text=it["turns"][0], followups=tuple(it["turns"][1:]),
                          temperature=mtbench.generation_temperature(it["category"]),
                          max_new_tokens=MAX_NEW_TOKENS) for it in items]


def score_mtbench(items: list[dict], answers: dict, judge: Judge | None = None,
                  judge_prompts: Mapping[str, dict] | None = None) -> dict:
    if judge is None:
        raise ValueError(f"{MTBENCH} needs an LLM judge (e.g. make_judge('gemini:gemini-2.5-flash'))")
    prompts = judge_prompts or OUR_MTBENCH_PROMPTS
    official = mtbench.score(items, answers, judge=judge, judge_prompts=prompts)
    valid = [r for r in official["records"] if r["score"] != -1]
    per_item: dict = {}
    for r in valid:
        per_item.setdefault(r["id"], [0.0, 0])
        per_item[r["id"]][0] += r["score"]
        per_item[r["id"]][1] += 1
    metrics = [metric("all", "overall", official["overall"], official["n"], list(per_item.values()), "ratio"),
               metric("turn1", "score", official["turn1"], official["n"],
                      [r["score"] for r in valid if r["turn"] == 1], "mean"),
               metric("turn2", "score", official["turn2"], official["n"],
                      [r["score"] for r in valid if r["turn"] == 2], "mean")]
    which = "FastChat judge prompts" if judge_prompts else "our judge prompts"
    return edition_score(MTBENCH, f"{MTBENCH} v1: textsuite prompts + follow-up turn, mtbench.score, {which}",
                         official["judge"], "overall", metrics, official)


# ------------------------------------------------------------------------------------------------ AlpacaEval-style


def build_alpacaeval(n_per_split: int | None = None, seed: int = 0, exclude_keys: set | None = None,
                     references: Mapping[str, str] | None = None, reference_generator: str = "reference"
                     ) -> list[dict]:
    if not references:
        raise ValueError(f"{ALPACAEVAL} needs references={{prompt id: reference answer}} (e.g. the base LLM's "
                         "answers to the textsuite prompts) to compare against")
    prompts = _prompts(n_per_split)
    missing = [p.id for p in prompts if p.id not in references]
    if missing:
        raise ValueError(f"{ALPACAEVAL}: no reference answer for {len(missing)} prompts (first: {missing[:5]})")
    return [{"id": p.prompt, "index": i, "instruction": p.prompt, "question": p.prompt, "prompt_id": p.id,
             "reference": references[p.id], "reference_generator": reference_generator, "category": p.category}
            for i, p in enumerate(prompts)]


def requests_alpacaeval(items: list[dict]) -> list[AnswerRequest]:
    return [AnswerRequest(id=it["id"], text=it["instruction"], max_new_tokens=MAX_NEW_TOKENS) for it in items]


def score_alpacaeval(items: list[dict], answers: dict, judge: Judge | None = None,
                     annotator_prompt: str | None = None) -> dict:
    if judge is None:
        raise ValueError(f"{ALPACAEVAL} needs an LLM judge (e.g. make_judge('gemini:gemini-2.5-flash'))")
    official = alpacaeval.score(items, answers, judge=judge, annotator_prompt=annotator_prompt or OUR_ANNOTATOR_PROMPT)
    # AlpacaEval's win-rate values: 2 -> 1 (model wins), 1 -> 0, 1.5 and 0 (identical) -> 0.5; unparsed dropped
    wins = []
    for a in official["annotations"]:
        p = a["preference"]
        if p == p:  # not NaN
            wins.append(0.5 if p == 0 else p - 1)
    metrics = [metric("all", "win_rate", official["win_rate"], official["n"], wins, "mean", 100)]
    which = "AlpacaEval annotator prompt" if annotator_prompt else "our annotator prompt"
    return edition_score(ALPACAEVAL, f"{ALPACAEVAL} v1: textsuite prompts vs references, alpacaeval.score "
                         f"(alpaca_eval_gpt4 parsing), {which}", official["judge"], "win_rate", metrics, official)
