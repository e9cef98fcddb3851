"""A judge that runs a transformers model in this process: greedy decoding, text or (with a processor) vision.

Used for offline judging (a local instruct model as MT-Bench/AlpacaEval substitute, the toy profile). It does not
enforce `response_schema`: readers of its replies must tolerate JSON embedded in text (the annotator does).
With temperature > 0 it samples, seeded by the prompt hash and repeat index so repeats differ but reruns agree.
"""
from __future__ import annotations

import threading
from typing import Any

from mmalign_utils.judges.base import Judge, JudgeReply, JudgeRequest


class LocalTransformersJudge(Judge):
    """`LocalTransformersJudge(model, tokenizer)` for text; `LocalTransformersJudge(model, processor)` for images.

    The tokenizer or processor must have a chat template. Calls are serialised (one generate at a time).
    """

    def __init__(self, model: Any, tokenizer_or_processor: Any, judge_id: str | None = None, cache=None):
        super().__init__(cache=cache)
        self.model = model
        self.processor = tokenizer_or_processor
        self.is_processor = hasattr(tokenizer_or_processor, "image_processor")
        self.tokenizer = getattr(tokenizer_or_processor, "tokenizer", tokenizer_or_processor)
        name = getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__
        self.judge_id = judge_id or f"local:{name}"
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalTransformersJudge({self.judge_id!r})"

    def _inputs(self, request: JudgeRequest) -> dict:
        if getattr(self.processor, "chat_template", None) is None and \
                getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError(f"{self.judge_id}: the tokenizer/processor has no chat template; set .chat_template "
                             "(a Jinja string) before using it as a judge")
        if request.images and not self.is_processor:
            raise ValueError(f"{self.judge_id}: this request has images but the judge was given a text tokenizer; "
                             "pass the model's processor instead")
        if not self.is_processor:
            return dict(self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True,
                                                           tokenize=True, return_dict=True, return_tensors="pt"))
        from PIL import Image

        last_user = max(i for i, m in enumerate(request.messages) if m["role"] == "user")
        conversation = []
        for i, message in enumerate(request.messages):
            content = [{"type": "image"} for _ in request.images] if i == last_user else []
            content.append({"type": "text", "text": message["content"]})
            conversation.append({"role": message["role"], "content": content})
        prompt = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        images = [Image.open(im).convert("RGB") if not hasattr(im, "convert") else im.convert("RGB")
                  for im in request.images]
        return dict(self.processor(text=prompt, images=images or None, return_tensors="pt"))

    def _call(self, request: JudgeRequest) -> JudgeReply:
        import torch

        inputs = self._inputs(request)
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}
        prompt_length = inputs["input_ids"].shape[1]
        generation: dict[str, Any] = {"max_new_tokens": request.max_tokens, "do_sample": request.temperature > 0}
        if request.temperature > 0:
            generation["temperature"] = request.temperature
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with self._lock, torch.no_grad():
            if request.temperature > 0:
                torch.manual_seed(int(request.prompt_hash()[:8], 16) + request.repeat)
            output = self.model.generate(**inputs, **generation, pad_token_id=pad_id)
        new_tokens = output[0, prompt_length:]
        return JudgeReply(text=self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip(),
                          judge_id=self.judge_id, input_tokens=int(prompt_length),
                          output_tokens=int(new_tokens.shape[0]), raw={})
