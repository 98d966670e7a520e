"""RMU, Representation Misdirection for Unlearning (Li et al., 2024, WMDP, arXiv 2403.03218).

Steer the hidden states of forget text at one layer towards a fixed random direction of large
norm, and keep the retain text's hidden states at that layer where the frozen model has them.
Its hooks tell the loop which hidden states to return (the OUTPUT of decoder block `layer`,
i.e. `output_hidden_states[layer + 1]` in transformers), which parameters train (the MLP
down-projection of the `update_layers` blocks, as in the paper) and build the control vector
once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from uld.errors import UldError
from uld.methods.base import Logs, LossInputs, Options, check_hidden_layer, register_method
from uld.methods.functional import need
from uld.options import check_range


@dataclass
class RmuOptions(Options):
    """The paper's Zephyr-7B run: c = 6.5, alpha = 1200, layer 7, layers 5-7 updated."""

    steering_coeff: float = 6.5
    """Norm c of the random control vector the forget hidden states are steered to (paper: 6.5)."""
    retain_weight: float = 1200.0
    """Weight of the retain activation-matching term, the paper's alpha (paper: 1200)."""
    layer: int = 7
    """Decoder block whose output hidden states are steered (paper: 7)."""
    update_layers: tuple[int, ...] = (5, 6, 7)
    """Decoder blocks whose MLP output projection is trained (paper: 5, 6, 7)."""

    renamed: ClassVar[dict[str, str]] = {"alpha": "retain_weight"}

    def check(self) -> None:
        check_range("loss.steering_coeff", self.steering_coeff, low=0.0, low_open=True)
        check_range("loss.retain_weight", self.retain_weight, low=0.0)
        if self.layer < 0:
            raise UldError(f"option loss.layer must be >= 0, got {self.layer}")
        if not self.update_layers:
            raise UldError("option loss.update_layers must name at least one decoder layer")
        self.update_layers = tuple(int(i) for i in self.update_layers)


def rmu_control(hidden_size: int, steering_coeff: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The fixed control vector c * u, shape (H,): u uniform in [0, 1)^H, scaled to unit norm."""
    u = torch.rand(hidden_size, generator=generator)
    return steering_coeff * u / u.norm()


def rmu_prepare(model_config: Any, opts: RmuOptions, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Built once before training: the control vector (H,)."""
    return {"control": rmu_control(model_config.hidden_size, opts.steering_coeff, generator)}


def rmu_check_model(model_config: Any, opts: RmuOptions) -> None:
    """Refuse a `layer` or an `update_layers` entry the model does not have."""
    check_hidden_layer(model_config, opts.layer, "loss.layer")
    for i in opts.update_layers:
        check_hidden_layer(model_config, i, "loss.update_layers")


def rmu_trainable(blocks_path: str, blocks: list[nn.Module], opts: RmuOptions) -> list[str]:
    """Parameter-name prefixes RMU trains: the MLP output projection of each update layer
    (`down_proj` in Llama-like blocks, else the block's whole MLP, else the whole block)."""
    prefixes = []
    for i in opts.update_layers:
        if not 0 <= i < len(blocks):
            raise UldError(f"option loss.update_layers={i} is out of range for a model with {len(blocks)} decoder layers")
        mlp = getattr(blocks[i], "mlp", None)
        if mlp is not None and hasattr(mlp, "down_proj"):
            prefixes.append(f"{blocks_path}.{i}.mlp.down_proj.")
        elif mlp is not None:
            prefixes.append(f"{blocks_path}.{i}.mlp.")
        else:
            prefixes.append(f"{blocks_path}.{i}.")
    return prefixes


def _token_mse(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    # Mean over real tokens of (1/H) ||h - target||^2: `F.mse_loss` of the WMDP code, with padding
    # left out. hidden (B, T, H); target broadcastable to it; mask (B, T) or None.
    sq = (hidden.float() - target.float()).pow(2).mean(-1)  # (B, T)
    if mask is None:
        return sq.mean()
    w = mask.float()
    return (sq * w).sum() / w.sum().clamp_min(1)


@register_method("rmu", RmuOptions, needs=("retain", "hidden"), lr=5e-5, policies=("full", "lora"),
                 hidden_layer=lambda opts: opts.layer, prepare=rmu_prepare, check_model=rmu_check_model,
                 trainable=rmu_trainable)
def rmu_loss(inputs: LossInputs, opts: RmuOptions) -> tuple[torch.Tensor, Logs]:
    """RMU: mean ||h(forget) - c u||^2 / H + retain_weight * mean ||h(retain) - h_frozen(retain)||^2 / H.

    Hidden states (B, T, H); `inputs.prepared["control"]` (H,) already equals c * u.
    """
    forget_h, retain_h, ref_retain_h = need(inputs, "rmu", "forget_hidden", "retain_hidden", "ref_retain_hidden")
    if "control" not in inputs.prepared:
        raise ValueError("method 'rmu' needs LossInputs.prepared['control'], which the loop left empty")
    control = inputs.prepared["control"]
    forget = _token_mse(forget_h, control.to(forget_h.device), inputs.forget_mask)
    retain = _token_mse(retain_h, ref_retain_h.detach(), inputs.retain_mask)
    logs = {
        "forget_mse": forget.detach(),
        "retain_mse": retain.detach(),
        "forget_hidden_norm": forget_h.detach().float().norm(dim=-1).mean(),
    }
    return forget + opts.retain_weight * retain, logs
