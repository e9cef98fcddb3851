"""`NoisyJudge`: perturb an exact judge's scores with controlled noise, to study how annotation noise affects
the preference pairs and the alignment (the ShapesWorld oracle is exact; real annotators are not).

Each score s becomes clip(round(s + N(0, sd)), 0, 4) for the chosen attributes. The noise is seeded by
(seed, request prompt hash, repeat index), so a rerun gives the same noisy scores and repeats differ.
Replies that are not annotation JSON pass through unchanged (the annotator then treats them as invalid).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np

from mmalign_utils.annotate.schema import ATTRIBUTES, MAX_SCORE, MIN_SCORE, InvalidReply, extract_json_object
from mmalign_utils.judges.base import Judge, JudgeReply, JudgeRequest


class NoisyJudge(Judge):
    """`NoisyJudge(make_judge("oracle"), sd=0.7, seed=1)`: same replies as `inner`, scores perturbed."""

    def __init__(self, inner: Judge, sd: float, seed: int = 0, attributes: Sequence[str] = ATTRIBUTES, cache=None):
        super().__init__(cache=cache)
        unknown = set(attributes) - set(ATTRIBUTES)
        if unknown:
            raise ValueError(f"unknown attributes {sorted(unknown)}; choose from {list(ATTRIBUTES)}")
        if sd < 0:
            raise ValueError(f"sd must be >= 0, got {sd}")
        self.inner, self.sd, self.seed, self.attributes = inner, sd, seed, tuple(attributes)
        self.judge_id = f"noisy(sd={sd:g},seed={seed}):{inner.judge_id}"

    def __repr__(self) -> str:
        return f"NoisyJudge({self.inner!r}, sd={self.sd}, seed={self.seed}, attributes={self.attributes})"

    def _rng(self, request: JudgeRequest) -> np.random.Generator:
        digest = hashlib.sha256(f"{self.seed}|{request.prompt_hash()}|{request.repeat}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def _call(self, request: JudgeRequest) -> JudgeReply:
        reply = self.inner.complete(request)
        try:
            obj, before = extract_json_object(reply.text)
        except InvalidReply:
            return JudgeReply(text=reply.text, judge_id=self.judge_id, input_tokens=reply.input_tokens,
                              output_tokens=reply.output_tokens, raw=reply.raw)
        if before and not obj.get("reasoning"):
            obj["reasoning"] = before  # keep the judge's reasoning that preceded its JSON
        rng = self._rng(request)
        for rating in obj.get("ratings", []) if isinstance(obj.get("ratings"), list) else []:
            for attribute in self.attributes:
                score = rating.get(attribute) if isinstance(rating, dict) else None
                if isinstance(score, int) and not isinstance(score, bool):
                    noisy = int(round(score + rng.normal(0.0, self.sd)))
                    rating[attribute] = min(MAX_SCORE, max(MIN_SCORE, noisy))
        return JudgeReply(text=json.dumps(obj), judge_id=self.judge_id, input_tokens=reply.input_tokens,
                          output_tokens=reply.output_tokens, raw={**reply.raw, "noise_sd": self.sd})
