"""Training code: the toy MLLM's visual instruction tuning (vision pretraining, LLaVA's two stages) here;
the alignment recipes (SFT, rejection sampling, SteerLM, DPO) join them later."""
