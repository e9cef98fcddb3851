"""Judges behind one interface: API models (Gemini, OpenAI-compatible), local models, the ShapesWorld oracle
and a scripted fake for tests. See `base.Judge`."""
from mmalign_utils.judges.base import Judge, JudgeReply, JudgeRequest, ScriptedJudge

__all__ = ["Judge", "JudgeReply", "JudgeRequest", "ScriptedJudge"]
