"""Gradient-ascent baselines: GA, GD (GA + retain NLL) and GA+KL.

As set up in TOFU (Maini et al. 2024, §5: "gradient ascent", "gradient difference",
"KL minimization"); weights 1 and 1 as in TOFU's code.
"""

from __future__ import annotations

import torch

from uld.methods.base import LossInputs, register_method
from uld.methods.functional import answer_prob, mean_nll, retain_kl, retain_nll


def _forget_ascent(inputs: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
    # L_GA = -NLL(D_f): minimising it raises the forget NLL.
    nll = mean_nll(inputs.forget_logits, inputs.forget_labels)
    logs = {"forget_nll": nll.item(), "forget_prob": answer_prob(inputs.forget_logits, inputs.forget_labels)}
    return -nll, logs


@register_method("ga")
def ga_loss(inputs: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
    """Gradient ascent: loss = -NLL(forget answers), token-mean over the batch."""
    return _forget_ascent(inputs)


@register_method("gd", needs=("retain",), gamma=1.0, alpha=1.0)
def gd_loss(inputs: LossInputs, *, gamma: float, alpha: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Gradient difference: loss = -gamma * NLL(forget) + alpha * NLL(retain)."""
    ascent, logs = _forget_ascent(inputs)
    retain = retain_nll(inputs, "gd")
    logs["retain_nll"] = retain.item()
    return gamma * ascent + alpha * retain, logs


@register_method("ga_kl", needs=("retain", "reference"), gamma=1.0, alpha=1.0)
def ga_kl_loss(inputs: LossInputs, *, gamma: float, alpha: float) -> tuple[torch.Tensor, dict[str, float]]:
    """GA + KL: loss = -gamma * NLL(forget) + alpha * KL(p_ref || p_policy) on retain."""
    ascent, logs = _forget_ascent(inputs)
    kl = retain_kl(inputs, "ga_kl")
    logs["retain_kl_ref"] = kl.item()
    return gamma * ascent + alpha * kl, logs
