"""The ULD model's default settings, in one place (Ji et al., "Unlearning from Logit Difference",
NeurIPS 2024, §5 and Appendix). `ULDConfig`, `build_assistant`, the run config (`uld unlearn`'s
`policy.*` options) and the reader of the older run-directory format all take them from here.

Plain numbers with no imports, so a module can read them without loading torch or transformers.
"""

ASSISTANT_WEIGHT = 0.75
"""Assistant weight w in `target - w * assistant`, the paper's alpha (0.75 on TOFU, 0.5 on Harry Potter)."""
FILTER_RATE = 1e-2
"""Plausibility filter rate r: tokens below r times the target's top probability are left out (paper: 1e-2)."""
LORA_RANK = 32
"""LoRA rank of the assistant's adapters (paper: 32)."""
LORA_ALPHA = 32.0
"""LoRA alpha, the adapters' scale numerator (paper: 32)."""
LORA_DROPOUT = 0.05
"""LoRA dropout (paper: 0.05)."""
