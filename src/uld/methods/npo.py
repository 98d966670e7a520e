"""Negative Preference Optimization (Zhang et al., 2024, arXiv 2404.05868) and its retain variants.

NPO is DPO with only a rejected answer: it pushes the policy's probability of the forget answer
below the frozen reference's, with a loss that saturates instead of diverging like GA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from uld.methods.base import Logs, LossInputs, Options, register_method
from uld.methods.functional import need, retain_kl, retain_nll
from uld.options import check_range


@dataclass
class NpoOptions(Options):
    """NPO's temperature."""

    beta: float = 0.1
    """Inverse temperature of the NPO loss (paper: 0.1)."""

    def check(self) -> None:
        check_range("loss.beta", self.beta, low=0.0, low_open=True)


@dataclass
class NpoRetainOptions(NpoOptions):
    """NPO's temperature and the weights of its forget and retain terms."""

    forget_weight: float = 1.0
    """Weight of the NPO term (paper: 1)."""
    retain_weight: float = 1.0
    """Weight of the retain term (NLL for npo_gd, KL to the original model for npo_kl; paper: 1)."""

    renamed: ClassVar[dict[str, str]] = {"gamma": "forget_weight", "alpha": "retain_weight"}

    def check(self) -> None:
        super().check()
        check_range("loss.forget_weight", self.forget_weight, low=0.0)
        check_range("loss.retain_weight", self.retain_weight, low=0.0)


def _npo_term(inputs: LossInputs, beta: float, method: str) -> tuple[torch.Tensor, Logs]:
    # NPO loss (Zhang et al. 2024): L = -(2/beta) * E log sigmoid(-beta * log(pi_theta(y|x) / pi_ref(y|x)))
    # with log pi(y|x) summed over the answer tokens (B,). At pi_theta = pi_ref: (2/beta) log 2.
    need(inputs, method, "ref_forget_logits")
    log_ratio = inputs.sequence_logprob("forget") - inputs.sequence_logprob("ref_forget")
    loss = -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()
    logs = {
        "forget_nll": inputs.mean_nll("forget").detach(),
        "forget_prob": inputs.answer_prob("forget"),
        "forget_logratio": log_ratio.detach().mean(),
    }
    return loss, logs


@register_method("npo", NpoOptions, needs=("reference",))
def npo_loss(inputs: LossInputs, opts: NpoOptions) -> tuple[torch.Tensor, Logs]:
    """NPO: loss = -(2/beta) mean log sigmoid(-beta (log pi(y|x) - log pi_ref(y|x))), beta 0.1."""
    return _npo_term(inputs, opts.beta, "npo")


@register_method("npo_gd", NpoRetainOptions, needs=("retain", "reference"))
def npo_gd_loss(inputs: LossInputs, opts: NpoRetainOptions) -> tuple[torch.Tensor, Logs]:
    """NPO + retain NLL ("NPO+RT" in the paper): forget_weight * L_NPO + retain_weight * NLL(retain)."""
    npo, logs = _npo_term(inputs, opts.beta, "npo_gd")
    retain = retain_nll(inputs, "npo_gd")
    logs["retain_nll"] = retain.detach()
    return opts.forget_weight * npo + opts.retain_weight * retain, logs


@register_method("npo_kl", NpoRetainOptions, needs=("retain", "reference"))
def npo_kl_loss(inputs: LossInputs, opts: NpoRetainOptions) -> tuple[torch.Tensor, Logs]:
    """NPO + KL: forget_weight * L_NPO + retain_weight * KL(p_ref || p_policy) on retain."""
    npo, logs = _npo_term(inputs, opts.beta, "npo_kl")
    kl = retain_kl(inputs, "npo_kl")
    logs["retain_kl_ref"] = kl.detach()
    return opts.forget_weight * npo + opts.retain_weight * kl, logs
