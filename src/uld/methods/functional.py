"""Pieces shared by the method losses: token-mean NLL, retain regularisers, KL terms.

Same shift convention as `uld.ops`: logits (B, T, V) at positions 0..T-1, position t predicts
token t+1, so every per-position quantity here is (B, T-1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from uld.methods.base import LossInputs
from uld.ops import token_nll


def need(inputs: LossInputs, method: str, *names: str) -> list[torch.Tensor]:
    """Return the named `LossInputs` tensors, or raise if the loop did not fill one.

    A missing tensor means the training loop ignored the method's `needs`: a programming
    error, not a user error, hence `ValueError`.
    """
    out = []
    for name in names:
        value = getattr(inputs, name)
        if value is None:
            raise ValueError(f"method {method!r} needs LossInputs.{name}, which the loop left empty")
        out.append(value)
    return out


def mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """NLL averaged over every scored token of the batch (Hugging Face's `outputs.loss`), scalar."""
    nll, mask = token_nll(logits, labels)
    return nll.sum() / mask.sum().clamp_min(1)


def prediction_mask(mask: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    """(B, T-1) float weights of positions t whose input t AND target t+1 are real tokens.

    `mask` is the (B, T) attention mask (1 = real token); None means every token is real.
    Requiring both ends works for left and right padding alike.
    """
    b, t, _ = logits.shape
    if mask is None:
        return logits.new_ones(b, t - 1, dtype=torch.float32)
    m = mask.to(torch.bool)
    return (m[:, :-1] & m[:, 1:]).float()


def masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean of a (B, T') tensor; zero weight everywhere gives 0, not NaN."""
    return (values * weights).sum() / weights.sum().clamp_min(1)


def kl_uniform(logits: torch.Tensor) -> torch.Tensor:
    """Per-position KL(U || p) for every position, (B, T).

    KL(U || p) = sum_v (1/V) (log(1/V) - log p_v) = -mean_v log p_v - log V  (>= 0, 0 iff p = U).
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    return -logp.mean(-1) - math.log(logits.size(-1))


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Per-position KL(p_ref || p_policy) for every position, (B, T).

    KL(p_ref || p) = sum_v p_ref,v (log p_ref,v - log p_v): the TOFU "KL" retain regulariser.
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    ref_logp = F.log_softmax(ref_logits.detach().float(), dim=-1)
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1)


def retain_nll(inputs: LossInputs, method: str) -> torch.Tensor:
    """Token-mean NLL of the policy on the retain answers (the "GD" / "RT" regulariser)."""
    need(inputs, method, "retain_logits", "retain_labels")
    return inputs.mean_nll("retain")


def retain_kl(inputs: LossInputs, method: str) -> torch.Tensor:
    """KL(p_ref || p_policy) on the retain batch, averaged over real predicting positions."""
    logits, ref_logits = need(inputs, method, "retain_logits", "ref_retain_logits")
    kl = kl_to_reference(logits, ref_logits)[:, :-1]
    return masked_mean(kl, prediction_mask(inputs.retain_mask, logits))
