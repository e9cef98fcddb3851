"""mmalign: reproduce and extend "Multi-modal Preference Alignment Remedies Degradation of Visual
Instruction Tuning on Language Models" (Li, Lin, Pei, ACL 2024) with a toy offline profile and a paper profile."""

__version__ = "0.1.0"
