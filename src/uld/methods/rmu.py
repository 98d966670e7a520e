"""RMU, Representation Misdirection for Unlearning (Li et al., 2024, WMDP, arXiv 2403.03218).

Steer the hidden states of forget text at one layer towards a fixed random direction of large
norm, and keep the retain text's hidden states at that layer where the frozen model has them.
The loop reads `layer` (hidden states are the OUTPUT of decoder layer `layer`, i.e.
`output_hidden_states[layer + 1]` in transformers), `update_layers` (the blocks whose MLP
down-projection is trained, as in the paper), and builds `control` with `rmu_control`.
"""

from __future__ import annotations

import torch

from uld.methods.base import LossInputs, register_method
from uld.methods.functional import need


def rmu_control(hidden_size: int, steering_coeff: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The fixed control vector c * u, shape (H,): u uniform in [0, 1)^H, scaled to unit norm."""
    u = torch.rand(hidden_size, generator=generator)
    return steering_coeff * u / u.norm()


def _token_mse(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    # Mean over real tokens of (1/H) ||h - target||^2: `F.mse_loss` of the WMDP code, with padding
    # left out. hidden (B, T, H); target broadcastable to it; mask (B, T) or None.
    sq = (hidden.float() - target.float()).pow(2).mean(-1)  # (B, T)
    if mask is None:
        return sq.mean()
    w = mask.float()
    return (sq * w).sum() / w.sum().clamp_min(1)


@register_method(
    "rmu", needs=("retain", "hidden"), steering_coeff=6.5, alpha=1200.0, layer=7, update_layers=(5, 6, 7)
)
def rmu_loss(
    inputs: LossInputs, *, steering_coeff: float, alpha: float, layer: int, update_layers: tuple[int, ...]
) -> tuple[torch.Tensor, dict[str, float]]:
    """RMU: mean ||h(forget) - c u||^2 / H + alpha * mean ||h(retain) - h_frozen(retain)||^2 / H.

    Defaults are the paper's Zephyr-7B run: c = 6.5, alpha = 1200, layer 7, layers 5-7 updated.
    `steering_coeff`, `layer`, `update_layers` are read by the loop (`control` already equals
    c * u); the loss itself uses `alpha`. Hidden states (B, T, H); control (H,).
    """
    forget_h, retain_h, ref_retain_h, control = need(
        inputs, "rmu", "forget_hidden", "retain_hidden", "ref_retain_hidden", "control"
    )
    forget = _token_mse(forget_h, control.to(forget_h.device), inputs.forget_mask)
    retain = _token_mse(retain_h, ref_retain_h.detach(), inputs.retain_mask)
    logs = {
        "forget_mse": forget.item(),
        "retain_mse": retain.item(),
        "forget_hidden_norm": forget_h.detach().float().norm(dim=-1).mean().item(),
    }
    return forget + alpha * retain, logs
