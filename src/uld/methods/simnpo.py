"""SimNPO (Fan et al., 2024, "Simplicity Prevails", arXiv 2410.07163).

NPO without a reference model: the reward is the length-normalised log-likelihood, so long
answers are not over-weighted and no frozen copy of the model is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from uld.methods.base import Logs, LossInputs, Options, register_method
from uld.methods.functional import retain_nll
from uld.options import check_finite, check_range


@dataclass
class SimNpoOptions(Options):
    """The authors' released TOFU forget10 run (for forget05: beta 2.5, forget_weight 0.1375)."""

    beta: float = 4.5
    """Inverse temperature of the length-normalised reward (forget10 run: 4.5)."""
    gamma: float = 0.0
    """Reward margin inside the sigmoid (forget10 run: 0)."""
    forget_weight: float = 0.125
    """Weight of the SimNPO term, the authors' "npo_coeff" (forget10 run: 0.125)."""
    retain_weight: float = 1.0
    """Weight of the retain NLL (0 = SimNPO alone)."""

    renamed: ClassVar[dict[str, str]] = {"alpha": "retain_weight"}

    def check(self) -> None:
        check_range("loss.beta", self.beta, low=0.0, low_open=True)
        check_finite("loss.gamma", self.gamma)
        check_range("loss.forget_weight", self.forget_weight, low=0.0)
        check_range("loss.retain_weight", self.retain_weight, low=0.0)


@register_method("simnpo", SimNpoOptions, needs=("retain",))
def simnpo_loss(inputs: LossInputs, opts: SimNpoOptions) -> tuple[torch.Tensor, Logs]:
    """SimNPO + retain NLL: forget_weight * L_SimNPO + retain_weight * NLL(retain).

    L_SimNPO = -(2/beta) mean log sigmoid(-(beta/|y|) log pi(y|x) - gamma), where |y| is the
    number of scored answer tokens. Logits (B, T, V); labels (B, T).
    """
    mean_logp = -inputs.sequence_nll("forget")  # (1/|y|) log pi(y|x), (B,)
    forget = -(2.0 / opts.beta) * F.logsigmoid(-opts.beta * mean_logp - opts.gamma).mean()
    retain = retain_nll(inputs, "simnpo")
    logs = {
        "forget_nll": inputs.mean_nll("forget").detach(),
        "forget_prob": inputs.answer_prob("forget"),
        "simnpo_loss": forget.detach(),
        "retain_nll": retain.detach(),
    }
    return opts.forget_weight * forget + opts.retain_weight * retain, logs
