"""The text instruction-following suite: prompts, strict/loose scoring, suite metrics.

Scoring follows IFEval (Zhou et al. 2023):
  - strict: an instruction passes if the response is not blank and its checker accepts the response;
  - loose: it passes if the checker accepts any non-blank variant of the response: the response, it without its
    first line, without its last line, without both, and each of those four with every "*" removed
    (`loose_variants`);
  - prompt-level accuracy: share of prompts whose instructions all pass; instruction-level accuracy: share of all
    instructions that pass, pooled over prompts.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..results import ResultRow
from .checkers import INSTRUCTION_TYPES, check_instruction, validate_kwargs

SUITE_NAME = "textsuite"
PROMPTS_FILE = "prompts.jsonl"
SPLITS = ("heldout", "dev")
DIFFICULTIES = ("easy", "medium", "hard")
MIN_TOPIC_KEYWORDS, MAX_TOPIC_KEYWORDS = 4, 8


@dataclass(frozen=True)
class Instruction:
    type: str  # a key of checkers.INSTRUCTION_TYPES, e.g. "length:words"
    kwargs: Mapping[str, object]


@dataclass(frozen=True)
class TextPrompt:
    id: str
    split: str  # "heldout" (reported) or "dev" (for trying prompts/templates; never reported)
    category: str  # the kind of task: explain, email, story, poem, list, plan, summarize, advice, ...
    difficulty: str  # our estimate: easy = a 135M chat model often meets it; hard = rarely
    prompt: str  # the user message, sent as is
    instructions: tuple[Instruction, ...]
    topic_keywords: tuple[str, ...]  # words a helpful on-topic answer would likely use (coverage proxy)

    def messages(self) -> list[dict[str, str]]:
        """The prompt as a one-turn chat, ready for a chat template."""
        return [{"role": "user", "content": self.prompt}]


@dataclass
class PromptScore:
    """Per-prompt result: one strict and one loose verdict per instruction, in the prompt's order."""

    prompt_id: str
    category: str
    difficulty: str
    instruction_types: list[str]
    strict_per_instruction: list[bool]
    loose_per_instruction: list[bool]

    @property
    def strict(self) -> bool:
        return all(self.strict_per_instruction)

    @property
    def loose(self) -> bool:
        return all(self.loose_per_instruction)


@dataclass
class SuiteScore:
    """Overall metrics plus the per-prompt records they come from (for bootstrap CIs over prompts)."""

    records: list[PromptScore] = field(default_factory=list)

    @property
    def n_prompts(self) -> int:
        return len(self.records)

    @property
    def n_instructions(self) -> int:
        return sum(len(r.instruction_types) for r in self.records)

    def prompt_values(self, mode: str = "strict") -> list[int]:
        """Per-prompt 0/1: did the prompt pass all its instructions (mode "strict" or "loose")."""
        _check_mode(mode)
        return [int(r.strict if mode == "strict" else r.loose) for r in self.records]

    def instruction_values(self, mode: str = "strict") -> list[list[int]]:
        """Per-prompt list of per-instruction 0/1 verdicts."""
        _check_mode(mode)
        return [
            [int(v) for v in (r.strict_per_instruction if mode == "strict" else r.loose_per_instruction)]
            for r in self.records
        ]

    def prompt_accuracy(self, mode: str = "strict") -> float:
        values = self.prompt_values(mode)
        return sum(values) / len(values) if values else math.nan

    def instruction_accuracy(self, mode: str = "strict") -> float:
        flat = [v for per_prompt in self.instruction_values(mode) for v in per_prompt]
        return sum(flat) / len(flat) if flat else math.nan

    @property
    def prompt_strict(self) -> float:
        return self.prompt_accuracy("strict")

    @property
    def prompt_loose(self) -> float:
        return self.prompt_accuracy("loose")

    @property
    def instruction_strict(self) -> float:
        return self.instruction_accuracy("strict")

    @property
    def instruction_loose(self) -> float:
        return self.instruction_accuracy("loose")

    def summary(self) -> dict[str, float]:
        return {
            "prompt_strict_acc": self.prompt_strict,
            "prompt_loose_acc": self.prompt_loose,
            "instruction_strict_acc": self.instruction_strict,
            "instruction_loose_acc": self.instruction_loose,
            "n_prompts": self.n_prompts,
            "n_instructions": self.n_instructions,
        }

    def by_instruction_type(self) -> dict[str, dict[str, float]]:
        """Per instruction type: n, strict and loose accuracy (which constraints degrade)."""
        table: dict[str, list[tuple[bool, bool]]] = {}
        for r in self.records:
            for t, s, lo in zip(r.instruction_types, r.strict_per_instruction, r.loose_per_instruction):
                table.setdefault(t, []).append((s, lo))
        return {
            t: {"n": len(v), "strict": sum(s for s, _ in v) / len(v), "loose": sum(lo for _, lo in v) / len(v)}
            for t, v in sorted(table.items())
        }

    def confidence_intervals(
        self, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
    ) -> dict[str, tuple[float, float, float]]:
        """Metric -> (value, low, high): percentile bootstrap over prompts.

        Instruction-level accuracy is a pooled ratio, so prompts are resampled as clusters (all their
        instructions together) and the ratio is recomputed per resample.
        """
        out: dict[str, tuple[float, float, float]] = {}
        n = self.n_prompts
        if n == 0:
            nan3 = (math.nan, math.nan, math.nan)
            return {m: nan3 for m in ("prompt_strict_acc", "prompt_loose_acc",
                                      "instruction_strict_acc", "instruction_loose_acc")}
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(n_boot, n))
        counts = np.array([len(r.instruction_types) for r in self.records], dtype=float)
        for mode in ("strict", "loose"):
            prompt_pass = np.array(self.prompt_values(mode), dtype=float)
            boots = prompt_pass[idx].mean(axis=1)
            lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
            out[f"prompt_{mode}_acc"] = (float(prompt_pass.mean()), float(lo), float(hi))
            passed = np.array([sum(v) for v in self.instruction_values(mode)], dtype=float)
            boots = passed[idx].sum(axis=1) / counts[idx].sum(axis=1)
            lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
            out[f"instruction_{mode}_acc"] = (float(passed.sum() / counts.sum()), float(lo), float(hi))
        return out

    def result_rows(self, *, notebook: str, model: str, split: str = "heldout", seed: int = 0,
                    profile: str = "toy", n_boot: int = 2000) -> list[ResultRow]:
        """The four accuracies as rows for results.csv, with bootstrap CIs over prompts (values in 0..1)."""
        return [
            ResultRow(notebook=notebook, model=model, benchmark=SUITE_NAME, split=split, metric=metric,
                      value=value, n=self.n_prompts, ci_low=lo, ci_high=hi, seed=seed, profile=profile,
                      protocol=suite_protocol(), judge="")
            for metric, (value, lo, hi) in self.confidence_intervals(n_boot=n_boot, seed=seed).items()
        ]


def _check_mode(mode: str) -> None:
    if mode not in ("strict", "loose"):
        raise ValueError(f"mode must be 'strict' or 'loose', got {mode!r}")


# --------------------------------------------------------------------------------------------- loading


def _prompts_text() -> str:
    return importlib.resources.files(__package__).joinpath(PROMPTS_FILE).read_text(encoding="utf-8")


def suite_sha256() -> str:
    """SHA-256 of the prompt file: which version of the suite a score was computed on."""
    return hashlib.sha256(_prompts_text().encode("utf-8")).hexdigest()


def suite_protocol() -> str:
    """The protocol string stored with every result row: scoring rule + prompt-file version."""
    return f"ifeval-style strict/loose; prompts sha256 {suite_sha256()[:12]}"


def _parse_prompt(row: dict, where: str) -> TextPrompt:
    required = ("id", "split", "category", "difficulty", "prompt", "instructions", "topic_keywords")
    missing = [k for k in required if k not in row]
    if missing:
        raise ValueError(f"{where}: missing fields {missing}; every prompt needs {list(required)}")
    if row["split"] not in SPLITS:
        raise ValueError(f"{where}: split {row['split']!r} is not one of {SPLITS}")
    if row["difficulty"] not in DIFFICULTIES:
        raise ValueError(f"{where}: difficulty {row['difficulty']!r} is not one of {DIFFICULTIES}")
    if not isinstance(row["prompt"], str) or not row["prompt"].strip():
        raise ValueError(f"{where}: empty prompt text")
    if not isinstance(row["instructions"], list) or not 1 <= len(row["instructions"]) <= 3:
        raise ValueError(f"{where}: needs a list of 1 to 3 instructions")
    instructions = []
    for i, inst in enumerate(row["instructions"]):
        if not isinstance(inst, dict) or "type" not in inst:
            raise ValueError(f"{where}: instruction {i} needs a 'type' (and 'kwargs')")
        kwargs = inst.get("kwargs", {})
        try:
            validate_kwargs(inst["type"], kwargs)
        except ValueError as e:
            raise ValueError(f"{where}: instruction {i}: {e}") from None
        instructions.append(Instruction(inst["type"], dict(kwargs)))
    keywords = row["topic_keywords"]
    if (not isinstance(keywords, list) or not MIN_TOPIC_KEYWORDS <= len(keywords) <= MAX_TOPIC_KEYWORDS
            or not all(isinstance(k, str) and k.strip() for k in keywords)):
        raise ValueError(f"{where}: topic_keywords must be {MIN_TOPIC_KEYWORDS}-{MAX_TOPIC_KEYWORDS} words")
    return TextPrompt(
        id=row["id"], split=row["split"], category=row["category"], difficulty=row["difficulty"],
        prompt=row["prompt"], instructions=tuple(instructions), topic_keywords=tuple(keywords),
    )


def parse_prompts(text: str, source: str = PROMPTS_FILE) -> list[TextPrompt]:
    """Parse and validate prompt JSONL; errors name the file, line and prompt id."""
    prompts, seen = [], {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}:{lineno}: not valid JSON ({e.msg})") from None
        where = f"{source}:{lineno} (id {row.get('id')!r})"
        prompt = _parse_prompt(row, where)
        if prompt.id in seen:
            raise ValueError(f"{where}: duplicate id, first used on line {seen[prompt.id]}")
        seen[prompt.id] = lineno
        prompts.append(prompt)
    return prompts


def load_text_suite(split: str = "heldout") -> list[TextPrompt]:
    """The suite's prompts of one split ("heldout", "dev", or "all"), in file order."""
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be one of {SPLITS} or 'all', got {split!r}")
    prompts = parse_prompts(_prompts_text())
    return prompts if split == "all" else [p for p in prompts if p.split == split]


# --------------------------------------------------------------------------------------------- scoring


def loose_variants(response: str) -> list[str]:
    """The eight IFEval loose variants, in IFEval's order (the response itself first)."""
    lines = response.split("\n")
    without_first = "\n".join(lines[1:]).strip()
    without_last = "\n".join(lines[:-1]).strip()
    without_both = "\n".join(lines[1:-1]).strip()
    return [
        response,
        response.replace("*", ""),
        without_first,
        without_last,
        without_both,
        without_first.replace("*", ""),
        without_last.replace("*", ""),
        without_both.replace("*", ""),
    ]


def instruction_passes(instruction: Instruction, response: str, mode: str = "strict") -> bool:
    _check_mode(mode)
    candidates = [response] if mode == "strict" else loose_variants(response)
    return any(c.strip() and check_instruction(instruction.type, c, dict(instruction.kwargs)) for c in candidates)


def score_response(prompt: TextPrompt, response: str | None) -> PromptScore:
    """Strict and loose verdicts for every instruction of one prompt. A missing response (None) fails all."""
    response = response or ""
    return PromptScore(
        prompt_id=prompt.id,
        category=prompt.category,
        difficulty=prompt.difficulty,
        instruction_types=[i.type for i in prompt.instructions],
        strict_per_instruction=[instruction_passes(i, response, "strict") for i in prompt.instructions],
        loose_per_instruction=[instruction_passes(i, response, "loose") for i in prompt.instructions],
    )


def align_responses(prompts: Sequence[TextPrompt], responses: Sequence[str | None] | Mapping[str, str | None]
                    ) -> list[str | None]:
    """Responses in prompt order: from a list aligned with `prompts` or a {prompt id: response} mapping."""
    if isinstance(responses, Mapping):
        missing = [p.id for p in prompts if p.id not in responses]
        if missing:
            raise ValueError(f"no response for {len(missing)} prompt ids, e.g. {missing[:5]}; "
                             "generate them or pass None for a prompt the model did not answer")
        return [responses[p.id] for p in prompts]
    if isinstance(responses, str):
        raise TypeError("responses must be a list of strings or a {prompt id: response} mapping, not one string")
    if len(responses) != len(prompts):
        raise ValueError(f"{len(responses)} responses for {len(prompts)} prompts; pass one per prompt, in order")
    return list(responses)


def score_suite(prompts: Sequence[TextPrompt],
                responses: Sequence[str | None] | Mapping[str, str | None]) -> SuiteScore:
    """Score every prompt; `responses` is a list in prompt order or a {prompt id: response} mapping."""
    aligned = align_responses(prompts, responses)
    return SuiteScore(records=[score_response(p, r) for p, r in zip(prompts, aligned)])


def known_instruction_types() -> list[str]:
    return sorted(INSTRUCTION_TYPES)
