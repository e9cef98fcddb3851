"""Count answer-format demands in LRV-Instruct's public questions, to set the toy's `demand_share`.

The paper's DPO prompts are half LRV-Instruct, half SciGraphQA. This counts the questions that state the form or
length of their answer, in the four kinds `world.answer_format` attaches to ShapesWorld prompts:
  word      a single word or phrase ("in one word", "a word or phrase", "short phrase")
  sentences a number of sentences ("in a sentence", "in two sentences", "one-sentence", "create a sentence")
  letter    the option's letter ("answer with the letter", "option letter")
  length    any other stated length, the analog of "in detail, in at least N sentences": "in detail",
            "detailed", "brief(ly)", "short", "concise(ly)"
The rule, fixed before the count was run (sixteenth/seventeenth sessions, docs/oracle_and_sampling.md): the toy
profile's `demand_share` is the share of questions in any of the four kinds, rounded to the nearest 0.05.

Input: LRV-Instruction's `Evaluation/evaluation_set.json` (1,000 GPT-4-written questions about Visual Genome
images, {"image_id", "question"}; github.com/FuxiaoLiu/LRV-Instruction), written by the same generator as the
training file the paper sampled (filter_cap.json), which is too large to fetch here. Also reads LLaVA question
files (JSON Lines with a "text" field), such as SciGraphQA's test questions in LLaVA's format
(github.com/findalexli/SciGraphQA, evaluation/llava-7b-v0/origional_questions/llava_eval_questions.jsonl), the
other half of the paper's prompts; the share is set from the LRV file, the SciGraphQA count is reported beside it.

    .venv/bin/python scripts/count_lrv_demands.py PATH/TO/evaluation_set.json [PATH/TO/llava_eval_questions.jsonl]
"""
from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

PATTERNS: dict[str, re.Pattern] = {
    "word": re.compile(r"\b(single|one)[ -]word\b|\bword or phrase\b|\bin a (word|phrase)\b|\bshort phrase\b", re.I),
    "sentences": re.compile(r"\b(in|with|using|as|into) (a|one|two|three|four|five|\d+) (single |short |brief |"
                            r"complete )?sentences?\b|\bone-sentence\b|\b(create|write|form|compose|construct|"
                            r"generate|make) a (single |short |brief )?sentence\b", re.I),
    "letter": re.compile(r"\b(option'?s?|answer|choice'?s?) letter\b|\bwith the letter\b|\bletter of the\b", re.I),
    "length": re.compile(r"\bin detail\b|\bdetailed\b|\bbrief(ly)?\b|\bshort\b|\bconcise(ly)?\b", re.I),
}


def count_demands(questions: list[str]) -> tuple[Counter, int, dict[str, list[str]]]:
    """Per kind, how many questions match; how many match any kind; up to 5 examples per kind."""
    per_kind: Counter = Counter()
    examples: dict[str, list[str]] = {k: [] for k in PATTERNS}
    any_kind = 0
    for q in questions:
        hits = [k for k, pattern in PATTERNS.items() if pattern.search(q)]
        any_kind += bool(hits)
        for k in hits:
            per_kind[k] += 1
            if len(examples[k]) < 5:
                examples[k].append(q)
    return per_kind, any_kind, examples


def read_questions(path: Path) -> list[str]:
    """Questions from a JSON list of {"question": ...} (LRV) or JSON Lines of {"text": ...} (LLaVA question files)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return [str(r["question"]) for r in json.loads(text)]
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [str(r.get("text", r.get("question", ""))) for r in rows]


def report(path: Path) -> float:
    questions = read_questions(path)
    per_kind, any_kind, examples = count_demands(questions)
    n = len(questions)
    print(f"{path.name}: {n} questions")
    for kind in PATTERNS:
        print(f"  {kind:9s} {per_kind[kind]:5d} ({per_kind[kind] / n:.1%})")
        for q in examples[kind]:
            print(f"              e.g. {q}")
    share = any_kind / n
    print(f"  any kind  {any_kind:5d} of {n} ({share:.1%})")
    return share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lrv", type=Path, help="LRV-Instruction Evaluation/evaluation_set.json")
    parser.add_argument("others", type=Path, nargs="*", help="more question files to count (not used for the share)")
    args = parser.parse_args()
    share = report(args.lrv)
    for path in args.others:
        report(path)
    print(f"demand_share (LRV, rounded to 0.05): {round(share * 20) / 20:.2f}")


if __name__ == "__main__":
    main()
