"""The method contract: a pure loss of (model outputs, batch), typed options, optional hooks.

A method is one file: an options dataclass (typed fields with the paper's defaults, one
documentation line each, range checks in `check`), a pure loss `loss(inputs, opts)`, and one
`@register_method(...)` line naming what the loop must compute for it (`needs`), its training
defaults and, when it needs them, hooks:

- `policies`: the policy kinds it can train (the first is the default);
- `trainable(blocks_path, blocks, opts)`: parameter-name prefixes to train (None = all);
- `hidden_layer(opts)`: the decoder block whose output hidden states the loss reads;
- `prepare(model_config, opts, generator)`: tensors built once before training (`inputs.prepared`);
- `check_model(model_config, opts)`: refuse options that do not fit the model (before any file
  is written);
- `prepare_data(forget, retain, cfg)`: the records it trains on (augmentation, alternatives).

The training loop runs every forward pass and fills a `LossInputs`; the loss never calls a
model. A loss returns `(loss, logs)`: `logs` maps names to detached 0-dim tensors, which the
loop turns into Python numbers once per logging interval.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from uld.errors import UldError, unknown_choice
from uld.ops import IGNORE_INDEX, token_nll
from uld.options import from_mapping

# What a method may ask the loop for, beyond the policy's logits on the forget batch.
NEEDS = frozenset({"retain", "reference", "alt", "hidden"})
POLICY_KINDS = ("uld", "full", "lora", "offset")
BASELINE_POLICIES = ("full", "lora", "offset")


@dataclass
class Options:
    """Base of every method's options. Subclasses are dataclasses; `check` validates values."""

    renamed: ClassVar[dict[str, str]] = {}
    """Old option names and their new names (an old name is refused with a pointer)."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise `UldError` (one sentence naming `loss.<option>`) on an invalid value."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass
class NoOptions(Options):
    """A method without options."""


@dataclass
class LossInputs:
    """Tensors a loss may read. Shapes: logits (B, T, V), labels/masks (B, T), hidden (B, T, H).

    Labels are aligned with inputs (-100 = not scored); see `uld.ops.token_nll`.
    - forget_*: the policy on the forget batch (always present).
    - retain_*: the policy on the retain batch (needs "retain").
    - ref_forget_logits / ref_retain_logits: the frozen original model (needs "reference").
    - alt_*: the forget questions paired with alternative (refusal) answers (needs "alt");
      ref_alt_logits with "reference" too.
    - *_hidden: hidden states at the method's `hidden_layer`, policy and frozen (needs "hidden").
    - prepared: what the method's `prepare` hook built once (e.g. RMU's control vector).

    `nll(name)` computes the per-token NLL of one logits/labels pair once and caches it, so
    every loss term and every logged figure reuses the same log-softmax.
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
    prepared: dict[str, torch.Tensor] = field(default_factory=dict)
    _nll: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False, compare=False)

    # logits field -> labels field, for `nll`
    _LABELS: ClassVar[dict[str, str]] = {
        "forget": "forget_labels", "retain": "retain_labels", "alt": "alt_labels",
        "ref_forget": "forget_labels", "ref_retain": "retain_labels", "ref_alt": "alt_labels",
    }

    def nll(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """`(nll, mask)` of `{name}_logits` against its labels, both (B, T-1), computed once.

        Reference logits are detached first (no gradient flows into the frozen model).
        """
        if name not in self._nll:
            logits, labels = getattr(self, f"{name}_logits"), getattr(self, self._LABELS[name])
            if logits is None or labels is None:
                raise ValueError(f"LossInputs.{name}_logits is empty")
            if name.startswith("ref_"):
                logits = logits.detach()
            self._nll[name] = token_nll(logits, labels)
        return self._nll[name]

    def mean_nll(self, name: str) -> torch.Tensor:
        """NLL averaged over every scored token of the batch (Hugging Face's `outputs.loss`), scalar."""
        nll, mask = self.nll(name)
        return nll.sum() / mask.sum().clamp_min(1)

    def sequence_logprob(self, name: str) -> torch.Tensor:
        """Summed log-probability of each sequence's scored tokens, (B,)."""
        return -self.nll(name)[0].sum(-1)

    def sequence_nll(self, name: str) -> torch.Tensor:
        """Mean per-token NLL of each sequence's scored tokens, (B,)."""
        nll, mask = self.nll(name)
        return nll.sum(-1) / mask.sum(-1).clamp_min(1)

    def answer_prob(self, name: str = "forget") -> torch.Tensor:
        """Mean over sequences of exp(-mean token NLL): TOFU's answer probability (detached scalar)."""
        return torch.exp(-self.sequence_nll(name).detach()).mean()


Logs = dict[str, torch.Tensor]
LossFn = Callable[[LossInputs, Any], tuple[torch.Tensor, Logs]]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its loss, options class, what the loop computes for it, its hooks."""

    name: str
    loss: LossFn
    options: type[Options] = NoOptions
    needs: frozenset[str] = frozenset()
    lr: float = 1e-5
    """Training default: AdamW peak learning rate."""
    epochs: int = 10
    """Training default: epochs."""
    policies: tuple[str, ...] = BASELINE_POLICIES
    trainable: Callable[..., list[str] | None] | None = None
    hidden_layer: Callable[[Any], int] | None = None
    prepare: Callable[..., dict[str, torch.Tensor]] | None = None
    check_model: Callable[[Any, Any], None] | None = None
    prepare_data: Callable[..., Any] | None = None
    listed: bool = True
    """False for objectives that are not unlearning methods (plain fine-tuning)."""
    doc: str = ""

    @property
    def defaults(self) -> dict[str, Any]:
        """The paper defaults of the method's options, as a dict."""
        return self.options().to_dict()

    def parse_options(self, values: dict[str, Any] | Options | None) -> Options:
        """The options from a dict of (possibly textual) values, typed and checked."""
        if isinstance(values, self.options):
            values.check()
            return values
        if isinstance(values, Options):
            values = values.to_dict()
        return from_mapping(self.options, values, prefix="loss.", renamed=self.options.renamed)

    def __call__(self, inputs: LossInputs, opts: Options | None = None, **overrides: Any) -> tuple[torch.Tensor, Logs]:
        """The loss on `inputs` with `opts` (default: the paper's), or the defaults with `overrides`."""
        if opts is None:
            try:
                opts = self.options(**overrides)
            except TypeError:
                unknown = sorted(set(overrides) - set(self.defaults))
                raise unknown_choice(f"option for method {self.name!r}", unknown[0], self.defaults) from None
        elif overrides:
            opts = dataclasses.replace(opts, **overrides)
        return self.loss(inputs, opts)


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    options: type[Options] = NoOptions,
    needs: tuple[str, ...] = (),
    **spec: Any,
) -> Callable[[LossFn], LossFn]:
    """Register the decorated loss under `name`; `spec` sets MethodSpec fields (lr, hooks, ...)."""
    bad = set(needs) - NEEDS
    if bad:
        raise ValueError(f"unknown needs {bad}; valid: {sorted(NEEDS)}")
    bad_policies = set(spec.get("policies", ())) - set(POLICY_KINDS)
    if bad_policies:
        raise ValueError(f"unknown policy kinds {bad_policies}; valid: {POLICY_KINDS}")

    def deco(fn: LossFn) -> LossFn:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = MethodSpec(name, fn, options, frozenset(needs), doc=doc[0] if doc else "", **spec)
        return fn

    return deco


def _load_all() -> None:
    # Importing the package's method modules runs their @register_method decorators.
    import importlib
    import pkgutil

    import uld.methods as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name not in ("base", "functional"):
            importlib.import_module(f"uld.methods.{mod.name}")


def get_method(name: str) -> MethodSpec:
    """The method registered as `name` (UldError with a "did you mean" otherwise)."""
    _load_all()
    if name not in _REGISTRY:
        raise unknown_choice("method", name, available_methods())
    return _REGISTRY[name]


def available_methods() -> list[str]:
    """The unlearning methods (objectives such as plain fine-tuning are left out)."""
    _load_all()
    return sorted(n for n, s in _REGISTRY.items() if s.listed)


def check_hidden_layer(model_config: Any, layer: int, key: str) -> None:
    """Refuse a decoder-block index that the model does not have."""
    n = getattr(model_config, "num_hidden_layers", None)
    if n is not None and not 0 <= layer < n:
        raise UldError(f"option {key}={layer} is out of range for a model with {n} decoder layers (0..{n - 1})")


__all__ = ["IGNORE_INDEX", "LossInputs", "MethodSpec", "NoOptions", "Options", "available_methods",
           "check_hidden_layer", "get_method", "register_method"]
