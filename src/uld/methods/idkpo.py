"""IdkPO: DPO (Rafailov et al., 2023) with a refusal as the preferred answer.

TOFU's "preference optimization" baseline (Maini et al., 2024): for a forget question, prefer
an "I don't know"-style answer (`alt_*`, see `uld.data.refusals`) to the true answer, relative
to the frozen target. A retain NLL term ("DPO+GD", as the ULD and SimNPO papers run it) keeps
the model's other knowledge; `retain_weight=0` gives TOFU's original DPO loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from uld.methods.base import Logs, LossInputs, Options, register_method
from uld.methods.functional import need, retain_nll
from uld.options import check_range


@dataclass
class IdkPoOptions(Options):
    """DPO's temperature and the retain weight."""

    beta: float = 0.1
    """Inverse temperature of the DPO loss (TOFU: 0.1)."""
    retain_weight: float = 1.0
    """Weight of the retain NLL (0 = TOFU's original DPO)."""

    renamed: ClassVar[dict[str, str]] = {"alpha": "retain_weight"}

    def check(self) -> None:
        check_range("loss.beta", self.beta, low=0.0, low_open=True)
        check_range("loss.retain_weight", self.retain_weight, low=0.0)


def refusal_alternatives(forget: list[dict], retain: list[dict], cfg: Any):
    """Each forget question paired with a fixed refusal (`alt`), chosen by the run's seed."""
    from uld.data.refusals import pick_refusal

    alt = [{"question": r["question"], "answer": pick_refusal(r["question"], cfg.seed)} for r in forget]
    return forget, retain, alt, None


@register_method("idkpo", IdkPoOptions, needs=("alt", "reference", "retain"), prepare_data=refusal_alternatives)
def idkpo_loss(inputs: LossInputs, opts: IdkPoOptions) -> tuple[torch.Tensor, Logs]:
    """DPO(chosen = refusal, rejected = forget answer) + retain_weight * NLL(retain), beta 0.1.

    L_DPO = -mean log sigmoid(beta * [(log pi(y_w|x) - log pi_ref(y_w|x))
                                      - (log pi(y_l|x) - log pi_ref(y_l|x))])
    with sequence log-probs summed over answer tokens; at pi = pi_ref it equals log 2.
    Logits (B, T, V) for the forget batch and for the alt (refusal) batch; labels (B, T).
    """
    need(inputs, "idkpo", "alt_logits", "alt_labels", "ref_alt_logits", "ref_forget_logits")
    chosen = inputs.sequence_logprob("alt") - inputs.sequence_logprob("ref_alt")
    rejected = inputs.sequence_logprob("forget") - inputs.sequence_logprob("ref_forget")
    dpo = -F.logsigmoid(opts.beta * (chosen - rejected)).mean()
    retain = retain_nll(inputs, "idkpo")
    logs = {
        "dpo_loss": dpo.detach(),
        "chosen_reward": opts.beta * chosen.detach().mean(),
        "rejected_reward": opts.beta * rejected.detach().mean(),
        "reward_accuracy": (chosen > rejected).float().mean(),
        "forget_nll": inputs.mean_nll("forget").detach(),
        "alt_nll": inputs.mean_nll("alt").detach(),
        "retain_nll": retain.detach(),
    }
    return dpo + opts.retain_weight * retain, logs
