"""SimNPO (Fan et al., 2024, "Simplicity Prevails", arXiv 2410.07163).

NPO without a reference model: the reward is the length-normalised log-likelihood, so long
answers are not over-weighted and no frozen copy of the model is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from uld.methods.base import LossInputs, register_method
from uld.methods.functional import answer_prob, mean_nll, retain_nll
from uld.ops import token_nll


@register_method("simnpo", needs=("retain",), beta=4.5, gamma=0.0, forget_weight=0.125, alpha=1.0)
def simnpo_loss(
    inputs: LossInputs, *, beta: float, gamma: float, forget_weight: float, alpha: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """SimNPO + retain NLL: forget_weight * L_SimNPO + alpha * NLL(retain).

    L_SimNPO = -(2/beta) mean log sigmoid(-(beta/|y|) log pi(y|x) - gamma), where |y| is the
    number of scored answer tokens. Defaults: the authors' released TOFU forget10 run
    (beta 4.5, gamma 0, forget weight "npo_coeff" 0.125, retain weight 1); for forget05 they
    used beta 2.5, forget weight 0.1375. `alpha=0` gives SimNPO alone.
    Logits (B, T, V); labels (B, T).
    """
    nll, mask = token_nll(inputs.forget_logits, inputs.forget_labels)  # (B, T-1)
    mean_logp = -nll.sum(-1) / mask.sum(-1).clamp_min(1)  # (1/|y|) log pi(y|x), (B,)
    forget = -(2.0 / beta) * F.logsigmoid(-beta * mean_logp - gamma).mean()
    retain = retain_nll(inputs, "simnpo")
    logs = {
        "forget_nll": mean_nll(inputs.forget_logits.detach(), inputs.forget_labels).item(),
        "forget_prob": answer_prob(inputs.forget_logits, inputs.forget_labels),
        "simnpo_loss": forget.item(),
        "retain_nll": retain.item(),
    }
    return forget_weight * forget + alpha * retain, logs
