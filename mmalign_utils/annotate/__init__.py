"""AI-judge annotation (paper §3.3): one judge request per item rates all k answers on HelpSteer's five
attributes (0-4) after step-by-step reasoning. See docs/annotation.md."""
from mmalign_utils.annotate.noise import NoisyJudge
from mmalign_utils.annotate.rubric import RATING_GUIDE, annotation_prompt, build_request
from mmalign_utils.annotate.runner import annotate, load_annotations, load_quarantine
from mmalign_utils.annotate.schema import ATTRIBUTES, InvalidReply, annotation_schema, parse_reply

__all__ = ["ATTRIBUTES", "InvalidReply", "NoisyJudge", "RATING_GUIDE", "annotate", "annotation_prompt",
           "annotation_schema", "build_request", "load_annotations", "load_quarantine", "parse_reply"]
