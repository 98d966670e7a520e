"""Supervised fine-tuning: not an unlearning method, the loop's plain objective for building
targets and retain models (`uld.train.finetune`). Registered unlisted, with TOFU's recipe."""

from __future__ import annotations

import torch

from uld.methods.base import Logs, LossInputs, Options, register_method


@register_method("sft", lr=1e-5, epochs=5, policies=("full",), listed=False)
def sft_loss(inputs: LossInputs, opts: Options) -> tuple[torch.Tensor, Logs]:
    """Supervised fine-tuning: token-mean NLL of the answers (prompt tokens masked)."""
    loss = inputs.mean_nll("forget")
    return loss, {"nll": loss.detach()}
