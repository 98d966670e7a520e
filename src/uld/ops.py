"""Token-level helpers shared by the losses and the evaluator.

Convention: `logits` are (B, T, V) for input positions 0..T-1 and `labels` are (B, T) aligned
with the inputs, -100 where a token is not scored. Position t's logits predict token t+1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token negative log-likelihood of the next token.

    Returns `(nll, mask)`, both (B, T-1): `nll[b, t] = -log p(labels[b, t+1] | inputs[b, :t+1])`,
    zero where `mask` is False (label -100).
    """
    logits = logits[:, :-1, :]
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    nll = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        target.clamp_min(0).reshape(-1),
        reduction="none",
    ).view(target.shape)
    return nll * mask, mask


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean per-token NLL of the scored tokens of each sequence, shape (B,)."""
    nll, mask = token_nll(logits, labels)
    return nll.sum(-1) / mask.sum(-1).clamp_min(1)


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of the scored tokens of each sequence, shape (B,)."""
    nll, _ = token_nll(logits, labels)
    return -nll.sum(-1)
