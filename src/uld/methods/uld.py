"""ULD's assistant objective (Ji et al., NeurIPS 2024, arXiv 2406.08607).

The assistant is trained in reverse: remember the forget set, know nothing on the retain set.
It trains only the ULD assistant policy (the target's first K blocks + LoRA), on the augmented
sets D'_f and D'_r (`uld.data.augment`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from uld.methods.base import Logs, LossInputs, Options, register_method
from uld.methods.functional import kl_uniform, masked_mean, need, prediction_mask
from uld.options import check_range


@dataclass
class UldOptions(Options):
    """Options of the ULD assistant loss."""

    beta: float = 6.5
    """Weight of KL(U || p_assistant) on the retain set (paper: 6.5; the official code used 5.0)."""
    uniform_all_positions: bool = False
    """Average the KL over every position, prompt and padding included, like the official code."""
    warmup_forget_nll: float | None = None
    """Warm-up (not in the paper; None = off): leave the retain term out of every micro-batch whose
    forget NLL (nats per answer token) is above this value, so that an assistant cut from a deep
    model first becomes a language model on the forget set. E.g. 2.0 (answer probability ~0.14)."""

    def check(self) -> None:
        check_range("loss.beta", self.beta, low=0.0)
        if self.warmup_forget_nll is not None:
            check_range("loss.warmup_forget_nll", self.warmup_forget_nll, low=0.0, low_open=True)


def prepare_uld_data(forget: list[dict], retain: list[dict], cfg: Any):
    """D'_f and D'_r (paraphrases and wrong answers, as set in `cfg.augment`), and the report."""
    from uld.data.augment import augment_for_uld

    a = cfg.augment
    aug = augment_for_uld(forget, retain, a.source, a.file or None, a.num_paraphrases, a.num_distractors,
                          a.allow_eval_fields, cfg.seed)
    return aug.forget, aug.retain, None, aug.report


@register_method("uld", UldOptions, needs=("retain",), lr=1e-3, epochs=10, policies=("uld",),
                 prepare_data=prepare_uld_data)
def uld_loss(inputs: LossInputs, opts: UldOptions) -> tuple[torch.Tensor, Logs]:
    """ULD assistant loss: NLL on forget answers + beta * KL(U || p) on retain.

    loss = NLL_a(D'_f) + beta * E_{x in D'_r} KL(U || p_a(. | x_<t))      (the paper's reversed objective)
    with KL(U || p) = sum_v (1/V)(log(1/V) - log p_v). beta = 6.5 is the paper's value.

    Default: KL averaged over retain positions whose input and next token are real
    (`retain_mask`, shape (B, T)). `uniform_all_positions=True` reproduces the official code
    (its `UniformLossFunc`): average over every one of the B*T positions, prompt, padding and
    last position included (the official code also used beta 5.0; pass it explicitly).
    `warmup_forget_nll=w` drops the retain term while NLL_a(D'_f) > w (one host sync per step).
    Logits (B, T, V); labels (B, T).
    """
    retain_logits = need(inputs, "uld", "retain_logits")[0]
    forget_nll = inputs.mean_nll("forget")
    kl = kl_uniform(retain_logits)  # (B, T)
    if opts.uniform_all_positions:
        retain_kl = kl.mean()
    else:
        retain_kl = masked_mean(kl[:, :-1], prediction_mask(inputs.retain_mask, retain_logits))
    warming = opts.warmup_forget_nll is not None and forget_nll.item() > opts.warmup_forget_nll
    loss = forget_nll if warming else forget_nll + opts.beta * retain_kl
    logs = {
        "forget_nll": forget_nll.detach(),
        "retain_kl_uniform": retain_kl.detach(),
        "forget_prob": inputs.answer_prob("forget"),
    }
    if opts.warmup_forget_nll is not None:
        logs["retain_term_on"] = torch.tensor(0.0 if warming else 1.0)
    return loss, logs
