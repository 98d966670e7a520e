"""Gradient-ascent baselines: GA, GD (GA + retain NLL) and GA+KL.

As set up in TOFU (Maini et al. 2024, §5: "gradient ascent", "gradient difference",
"KL minimization"); weights 1 and 1 as in TOFU's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from uld.methods.base import Logs, LossInputs, Options, register_method
from uld.methods.functional import retain_kl, retain_nll
from uld.options import check_range


@dataclass
class GdOptions(Options):
    """Weights of the forget and retain terms (TOFU: 1 and 1)."""

    forget_weight: float = 1.0
    """Weight of the gradient-ascent term on the forget answers."""
    retain_weight: float = 1.0
    """Weight of the retain term (NLL for gd, KL to the original model for ga_kl)."""

    renamed: ClassVar[dict[str, str]] = {"gamma": "forget_weight", "alpha": "retain_weight"}

    def check(self) -> None:
        check_range("loss.forget_weight", self.forget_weight, low=0.0)
        check_range("loss.retain_weight", self.retain_weight, low=0.0)


def _forget_ascent(inputs: LossInputs) -> tuple[torch.Tensor, Logs]:
    # L_GA = -NLL(D_f): minimising it raises the forget NLL.
    nll = inputs.mean_nll("forget")
    return -nll, {"forget_nll": nll.detach(), "forget_prob": inputs.answer_prob("forget")}


@register_method("ga")
def ga_loss(inputs: LossInputs, opts: Options) -> tuple[torch.Tensor, Logs]:
    """Gradient ascent: loss = -NLL(forget answers), token-mean over the batch."""
    return _forget_ascent(inputs)


@register_method("gd", GdOptions, needs=("retain",))
def gd_loss(inputs: LossInputs, opts: GdOptions) -> tuple[torch.Tensor, Logs]:
    """Gradient difference: loss = -forget_weight * NLL(forget) + retain_weight * NLL(retain)."""
    ascent, logs = _forget_ascent(inputs)
    retain = retain_nll(inputs, "gd")
    logs["retain_nll"] = retain.detach()
    return opts.forget_weight * ascent + opts.retain_weight * retain, logs


@register_method("ga_kl", GdOptions, needs=("retain", "reference"))
def ga_kl_loss(inputs: LossInputs, opts: GdOptions) -> tuple[torch.Tensor, Logs]:
    """GA + KL: loss = -forget_weight * NLL(forget) + retain_weight * KL(p_ref || p_policy) on retain."""
    ascent, logs = _forget_ascent(inputs)
    kl = retain_kl(inputs, "ga_kl")
    logs["retain_kl_ref"] = kl.detach()
    return opts.forget_weight * ascent + opts.retain_weight * kl, logs
