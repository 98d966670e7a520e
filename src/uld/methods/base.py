"""The method contract: a pure loss of (model outputs, batch) plus a registry.

The training loop runs every forward pass and fills a `LossInputs` with what the method's
`needs` asks for; the loss never calls a model. A loss returns `(loss, logs)` where `logs`
maps names to Python floats (logged as metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from uld.errors import unknown_choice

# What a method may ask the loop for, beyond the policy's logits on the forget batch.
NEEDS = frozenset({"retain", "reference", "alt", "hidden"})


@dataclass
class LossInputs:
    """Tensors a loss may read. Shapes: logits (B, T, V), labels/masks (B, T), hidden (B, T, H).

    Labels are aligned with inputs (-100 = not scored); see `uld.ops.token_nll`.
    - forget_*: the policy on the forget batch (always present).
    - retain_*: the policy on the retain batch (needs "retain").
    - ref_forget_logits / ref_retain_logits: the frozen original model (needs "reference").
    - alt_*: the forget questions paired with alternative (refusal) answers (needs "alt");
      ref_alt_logits with "reference" too.
    - *_hidden: hidden states at the method's layer, policy and frozen (needs "hidden");
      `control` is RMU's fixed random direction (H,), already scaled.
    """

    forget_logits: torch.Tensor
    forget_labels: torch.Tensor
    forget_mask: torch.Tensor | None = None
    retain_logits: torch.Tensor | None = None
    retain_labels: torch.Tensor | None = None
    retain_mask: torch.Tensor | None = None
    ref_forget_logits: torch.Tensor | None = None
    ref_retain_logits: torch.Tensor | None = None
    alt_logits: torch.Tensor | None = None
    alt_labels: torch.Tensor | None = None
    ref_alt_logits: torch.Tensor | None = None
    forget_hidden: torch.Tensor | None = None
    retain_hidden: torch.Tensor | None = None
    ref_retain_hidden: torch.Tensor | None = None
    control: torch.Tensor | None = None


LossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its loss, what the loop must compute for it, and its defaults."""

    name: str
    loss: LossFn
    needs: frozenset[str]
    defaults: dict[str, Any] = field(default_factory=dict)
    doc: str = ""

    def __call__(self, inputs: LossInputs, **overrides: Any) -> tuple[torch.Tensor, dict[str, float]]:
        unknown = set(overrides) - set(self.defaults)
        if unknown:
            raise unknown_choice(f"option for method {self.name!r}", sorted(unknown)[0], self.defaults)
        return self.loss(inputs, **{**self.defaults, **overrides})


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(name: str, needs: tuple[str, ...] = (), **defaults: Any) -> Callable[[LossFn], LossFn]:
    """Register `fn` under `name`; `defaults` are its hyperparameters (from its paper)."""
    bad = set(needs) - NEEDS
    if bad:
        raise ValueError(f"unknown needs {bad}; valid: {sorted(NEEDS)}")

    def deco(fn: LossFn) -> LossFn:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = MethodSpec(name, fn, frozenset(needs), dict(defaults), doc[0] if doc else "")
        return fn

    return deco


def _load_all() -> None:
    # Importing the package's method modules runs their @register_method decorators.
    import importlib
    import pkgutil

    import uld.methods as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name not in ("base",):
            importlib.import_module(f"uld.methods.{mod.name}")


def get_method(name: str) -> MethodSpec:
    _load_all()
    if name not in _REGISTRY:
        raise unknown_choice("method", name, _REGISTRY)
    return _REGISTRY[name]


def available_methods() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)
