"""HelpSteer's five attributes and their 0-4 scale (paper §3.3): the one definition that the annotator's schema,
the oracle, the dataset formats and the report import. Kept free of heavy imports (no `datasets`), so a light
module can take it."""
from __future__ import annotations

ATTRIBUTES: tuple[str, ...] = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
MIN_SCORE, MAX_SCORE = 0, 4

__all__ = ["ATTRIBUTES", "MAX_SCORE", "MIN_SCORE"]
