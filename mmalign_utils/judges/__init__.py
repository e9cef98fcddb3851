"""Judges behind one interface: API models (Gemini, OpenAI-compatible), local models, the ShapesWorld oracle
and a scripted fake for tests. See `base.Judge` and docs/judges.md."""
from mmalign_utils.judges.base import (
    Judge,
    JudgeConfigError,
    JudgeError,
    JudgeReply,
    JudgeRequest,
    ScriptedJudge,
    TransientJudgeError,
)
from mmalign_utils.judges.cache import SQLiteJudgeCache
from mmalign_utils.judges.factory import make_judge, register_backend
from mmalign_utils.judges.retry import RetryingJudge, RetryPolicy

__all__ = [
    "Judge", "JudgeConfigError", "JudgeError", "JudgeReply", "JudgeRequest", "RetryPolicy", "RetryingJudge",
    "SQLiteJudgeCache", "ScriptedJudge", "TransientJudgeError", "make_judge", "register_backend",
]
