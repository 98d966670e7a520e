"""Negative Preference Optimization (Zhang et al., 2024, arXiv 2404.05868) and its retain variants.

NPO is DPO with only a rejected answer: it pushes the policy's probability of the forget answer
below the frozen reference's, with a loss that saturates instead of diverging like GA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from uld.methods.base import LossInputs, register_method
from uld.methods.functional import answer_prob, mean_nll, need, retain_kl, retain_nll
from uld.ops import sequence_logprob


def _npo_term(inputs: LossInputs, beta: float, method: str) -> tuple[torch.Tensor, dict[str, float]]:
    # NPO loss (Zhang et al. 2024): L = -(2/beta) * E log sigmoid(-beta * log(pi_theta(y|x) / pi_ref(y|x)))
    # with log pi(y|x) summed over the answer tokens (B,). At pi_theta = pi_ref: (2/beta) log 2.
    ref_logits = need(inputs, method, "ref_forget_logits")[0]
    logp = sequence_logprob(inputs.forget_logits, inputs.forget_labels)
    ref_logp = sequence_logprob(ref_logits.detach(), inputs.forget_labels)
    log_ratio = logp - ref_logp
    loss = -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()
    logs = {
        "forget_nll": mean_nll(inputs.forget_logits.detach(), inputs.forget_labels).item(),
        "forget_prob": answer_prob(inputs.forget_logits, inputs.forget_labels),
        "forget_logratio": log_ratio.detach().mean().item(),
    }
    return loss, logs


@register_method("npo", needs=("reference",), beta=0.1)
def npo_loss(inputs: LossInputs, *, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """NPO: loss = -(2/beta) mean log sigmoid(-beta (log pi(y|x) - log pi_ref(y|x))), beta 0.1."""
    return _npo_term(inputs, beta, "npo")


@register_method("npo_gd", needs=("retain", "reference"), beta=0.1, gamma=1.0, alpha=1.0)
def npo_gd_loss(
    inputs: LossInputs, *, beta: float, gamma: float, alpha: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """NPO + retain NLL ("NPO+RT" in the paper): gamma * L_NPO + alpha * NLL(retain)."""
    npo, logs = _npo_term(inputs, beta, "npo_gd")
    retain = retain_nll(inputs, "npo_gd")
    logs["retain_nll"] = retain.item()
    return gamma * npo + alpha * retain, logs


@register_method("npo_kl", needs=("retain", "reference"), beta=0.1, gamma=1.0, alpha=1.0)
def npo_kl_loss(
    inputs: LossInputs, *, beta: float, gamma: float, alpha: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """NPO + KL: gamma * L_NPO + alpha * KL(p_ref || p_policy) on retain."""
    npo, logs = _npo_term(inputs, beta, "npo_kl")
    kl = retain_kl(inputs, "npo_kl")
    logs["retain_kl_ref"] = kl.item()
    return gamma * npo + alpha * kl, logs
