"""IdkPO: DPO (Rafailov et al., 2023) with a refusal as the preferred answer.

TOFU's "preference optimization" baseline (Maini et al., 2024): for a forget question, prefer
an "I don't know"-style answer (`alt_*`, see `uld.data.refusals`) to the true answer, relative
to the frozen target. A retain NLL term ("DPO+GD", as the ULD and SimNPO papers run it) keeps
the model's other knowledge; `alpha=0` gives TOFU's original DPO loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from uld.methods.base import LossInputs, register_method
from uld.methods.functional import mean_nll, need, retain_nll
from uld.ops import sequence_logprob


@register_method("idkpo", needs=("alt", "reference", "retain"), beta=0.1, alpha=1.0)
def idkpo_loss(inputs: LossInputs, *, beta: float, alpha: float) -> tuple[torch.Tensor, dict[str, float]]:
    """DPO(chosen = refusal, rejected = forget answer) + alpha * NLL(retain), beta 0.1.

    L_DPO = -mean log sigmoid(beta * [(log pi(y_w|x) - log pi_ref(y_w|x))
                                      - (log pi(y_l|x) - log pi_ref(y_l|x))])
    with sequence log-probs summed over answer tokens; at pi = pi_ref it equals log 2.
    Logits (B, T, V) for the forget batch and for the alt (refusal) batch; labels (B, T).
    """
    alt_logits, alt_labels, ref_alt, ref_forget = need(
        inputs, "idkpo", "alt_logits", "alt_labels", "ref_alt_logits", "ref_forget_logits"
    )
    chosen = sequence_logprob(alt_logits, alt_labels) - sequence_logprob(ref_alt.detach(), alt_labels)
    rejected = sequence_logprob(inputs.forget_logits, inputs.forget_labels) - sequence_logprob(
        ref_forget.detach(), inputs.forget_labels
    )
    dpo = -F.logsigmoid(beta * (chosen - rejected)).mean()
    retain = retain_nll(inputs, "idkpo")
    logs = {
        "dpo_loss": dpo.item(),
        "chosen_reward": beta * chosen.detach().mean().item(),
        "rejected_reward": beta * rejected.detach().mean().item(),
        "reward_accuracy": (chosen > rejected).float().mean().item(),
        "forget_nll": mean_nll(inputs.forget_logits.detach(), inputs.forget_labels).item(),
        "alt_nll": mean_nll(alt_logits.detach(), alt_labels).item(),
        "retain_nll": retain.item(),
    }
    return dpo + alpha * retain, logs
