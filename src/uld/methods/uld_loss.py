"""ULD's assistant objective (Ji et al., NeurIPS 2024, arXiv 2406.08607).

The assistant is trained in reverse: remember the forget set, know nothing on the retain set.
"""

from __future__ import annotations

import torch

from uld.methods.base import LossInputs, register_method
from uld.methods.functional import (
    answer_prob,
    kl_uniform,
    masked_mean,
    mean_nll,
    need,
    prediction_mask,
)


@register_method("uld", needs=("retain",), beta=6.5, uniform_all_positions=False)
def uld_loss(
    inputs: LossInputs, *, beta: float, uniform_all_positions: bool
) -> tuple[torch.Tensor, dict[str, float]]:
    """ULD assistant loss: NLL on forget answers + beta * KL(U || p) on retain.

    loss = NLL_a(D'_f) + beta * E_{x in D'_r} KL(U || p_a(. | x_<t))      (the paper's reversed objective)
    with KL(U || p) = sum_v (1/V)(log(1/V) - log p_v). beta = 6.5 is the paper's value.

    Default: KL averaged over retain positions whose input and next token are real
    (`retain_mask`, shape (B, T)). `uniform_all_positions=True` reproduces the official code
    (its `UniformLossFunc`): average over every one of the B*T positions, prompt, padding and
    last position included (the official code also used beta 5.0; pass it explicitly).
    Logits (B, T, V); labels (B, T).
    """
    retain_logits = need(inputs, "uld", "retain_logits")[0]
    forget_nll = mean_nll(inputs.forget_logits, inputs.forget_labels)
    kl = kl_uniform(retain_logits)  # (B, T)
    if uniform_all_positions:
        retain_kl = kl.mean()
    else:
        retain_kl = masked_mean(kl[:, :-1], prediction_mask(inputs.retain_mask, retain_logits))
    loss = forget_nll + beta * retain_kl
    logs = {
        "forget_nll": forget_nll.item(),
        "retain_kl_uniform": retain_kl.item(),
        "forget_prob": answer_prob(inputs.forget_logits, inputs.forget_labels),
    }
    return loss, logs
