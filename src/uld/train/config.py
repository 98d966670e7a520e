"""Run configuration: one dataclass per concern; the only place training defaults live.

A run's config is built in layers: these defaults, then a YAML file (`--config`), then the
command's flags, then `--set section.key=value` overrides. Every key is checked against the
dataclasses, so a typo fails with "unknown option 'train.lrr'; did you mean 'train.lr'?".

Defaults follow the papers: ULD (Ji et al. 2024, §5): AdamW, lr 1e-3, batch 32, 10 epochs,
warm-up 10 %, weight decay 0.01, K = a quarter of the layers, LoRA r 32 / alpha 32 / dropout
0.05. The baselines use TOFU's fine-tuning recipe (Maini et al. 2024; NPO, Zhang et al. 2024):
AdamW, lr 1e-5, batch 32, 10 epochs; RMU (Li et al. 2024): lr 5e-5.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uld.errors import UldError, unknown_choice

POLICY_KINDS = ("uld", "full", "lora", "offset")
AUGMENT_SOURCES = ("auto", "none", "fields", "file")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
SCHEDULES = ("linear", "cosine", "constant")

# Paper defaults that differ per method; a `None` field in TrainConfig takes its value here.
METHOD_TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "uld": {"lr": 1e-3, "epochs": 10},  # ULD paper
    "rmu": {"lr": 5e-5, "epochs": 10},  # RMU (WMDP) paper's learning rate
    "sft": {"lr": 1e-5, "epochs": 5},  # TOFU's fine-tuning of the target
}
BASELINE_TRAIN_DEFAULTS: dict[str, Any] = {"lr": 1e-5, "epochs": 10}  # TOFU / NPO recipe


@dataclass
class DataConfig:
    """Where the QA records come from and how they become token ids."""

    source: str = ""
    """Local directory of split files (`forget10.json`) or hub dataset id (`locuslab/TOFU`)."""
    forget: str = "forget10"
    """Name of the forget split."""
    retain: str = "retain90"
    """Name of the retain split ('' for methods that need no retain data)."""
    max_length: int = 512
    """Prompt + answer tokens kept per item; longer answers are cut at the end and counted."""
    template: str = "[INST] {question} [/INST]"
    """Plain prompt template, used when the tokenizer has no chat template (TOFU's default)."""
    answer_prefix: str = " "
    """Text put before the answer with the plain template."""
    use_chat_template: bool = True
    """Use the tokenizer's chat template when it has one."""


@dataclass
class AugmentConfig:
    """ULD's data augmentation (DESIGN §2): D'_f = forget + paraphrases, D'_r = retain + wrong answers."""

    source: str = "auto"
    """'auto' (the file if given, else the forget records' fields, else none), 'none', 'fields', 'file'."""
    file: str = ""
    """Augmentation JSON lines: question, answer, paraphrases [...], distractors [...] (see `uld augment`)."""
    num_paraphrases: int = 2
    """Paraphrased forget QAs added to D'_f per forget pair (paper: 2)."""
    num_distractors: int = 2
    """Forget questions with wrong answers added to D'_r per forget pair (paper: 2)."""
    allow_eval_fields: bool = False
    """Train on the records' paraphrased_answer / perturbed_answer fields; on TOFU these ARE the evaluation's."""


@dataclass
class PolicyConfig:
    """What is trained: the ULD assistant, the full model, LoRA on it, or an offset model."""

    kind: str = ""
    """'uld', 'full', 'lora' or 'offset'; '' = 'uld' for method uld, else 'full'."""
    num_layers: int = 0
    """ULD assistant / offset model layers K; 0 = a quarter of the target's layers (paper: 8 of 32)."""
    lora_rank: int = 32
    """LoRA rank (paper: 32); for ULD 0 trains a private copy of the K blocks instead."""
    lora_alpha: float = 32.0
    """LoRA alpha (paper: 32)."""
    lora_dropout: float = 0.05
    """LoRA dropout (paper: 0.05)."""
    target_modules: list[str] | None = None
    """Linear layers that get LoRA (None: every linear layer in the decoder blocks)."""
    alpha: float = 0.75
    """ULD inference weight: logits = target - alpha * assistant (paper: 0.75 on TOFU)."""
    filter_rate: float = 1e-2
    """ULD plausibility filter rate r (paper: 1e-2)."""
    offset_model: str = ""
    """Offset unlearning's small model (same vocabulary); '' = the target's first K layers."""


@dataclass
class TrainConfig:
    """The optimiser, the schedule and the loop's bookkeeping."""

    epochs: int | None = None
    """Epochs (the cap when `stop_forget_prob` is set); None = the method's paper default."""
    lr: float | None = None
    """AdamW peak learning rate; None = the method's paper default (ULD 1e-3, baselines 1e-5)."""
    batch_size: int = 32
    """Forget examples per optimizer step, over all processes and accumulation (paper: 32)."""
    micro_batch_size: int = 0
    """Forget examples per forward pass per process; 0 = batch_size / processes (no accumulation)."""
    warmup_ratio: float = 0.1
    """Fraction of the steps with linear warm-up (paper: 10 %)."""
    schedule: str = "linear"
    """Decay after warm-up: 'linear' (to 0), 'cosine' or 'constant'."""
    weight_decay: float = 0.01
    """AdamW weight decay (paper: 0.01)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas (PyTorch defaults)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables it."""
    mixed_precision: str = "auto"
    """'auto' (bf16 on a GPU that has it, else fp16 on GPU, else fp32), 'no', 'fp16', 'bf16'."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    stop_forget_prob: float | None = None
    """Stop when the policy's mean forget-answer probability reaches this (checked each epoch; for ULD, DESIGN §6)."""
    stop_after_epoch: int | None = None
    """End the process after this epoch (checkpoint kept) and continue later with --resume."""
    keep_checkpoints: int = 1
    """Epoch checkpoints kept in RUN/checkpoints (the most recent ones)."""
    log_every: int = 1
    """Optimizer steps between metric lines."""


@dataclass
class RunConfig:
    """Everything a run needs; saved as the run's `config.yaml`."""

    model: str = ""
    """Target model: hub id or local directory."""
    method: str = "uld"
    """Unlearning method (see `uld.methods.available_methods()`)."""
    seed: int = 0
    """Seed for initialisation, data order and dropout."""
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: dict[str, Any] = field(default_factory=dict)
    """Method hyperparameters overriding the method's defaults (e.g. beta for uld / npo)."""

    def __post_init__(self) -> None:
        self.resolve()

    def resolve(self) -> RunConfig:
        """Fill method-dependent defaults and check cross-field rules (UldError on a bad value)."""
        method_defaults = METHOD_TRAIN_DEFAULTS.get(self.method, BASELINE_TRAIN_DEFAULTS)
        if self.train.lr is None:
            self.train.lr = method_defaults["lr"]
        if self.train.epochs is None:
            self.train.epochs = method_defaults["epochs"]
        if not self.policy.kind:
            self.policy.kind = "uld" if self.method == "uld" else "full"
        _choice("policy.kind", self.policy.kind, POLICY_KINDS)
        _choice("augment.source", self.augment.source, AUGMENT_SOURCES)
        _choice("train.mixed_precision", self.train.mixed_precision, MIXED_PRECISION)
        _choice("train.schedule", self.train.schedule, SCHEDULES)
        if (self.method == "uld") != (self.policy.kind == "uld"):
            raise UldError(
                f"policy.kind {self.policy.kind!r} does not fit method {self.method!r}: "
                "method uld trains the ULD assistant (policy.kind uld), every other method a full, lora or offset policy"
            )
        _positive("train.epochs", self.train.epochs)
        _positive("train.batch_size", self.train.batch_size)
        _positive("data.max_length", self.data.max_length)
        _positive("train.log_every", self.train.log_every)
        if self.train.lr <= 0:
            raise UldError(f"train.lr must be > 0, got {self.train.lr}")
        if self.train.micro_batch_size < 0:
            raise UldError(f"train.micro_batch_size must be >= 0, got {self.train.micro_batch_size}")
        if not 0 <= self.train.warmup_ratio < 1:
            raise UldError(f"train.warmup_ratio must be in [0, 1), got {self.train.warmup_ratio}")
        if self.train.stop_forget_prob is not None and not 0 < self.train.stop_forget_prob <= 1:
            raise UldError(f"train.stop_forget_prob must be in (0, 1], got {self.train.stop_forget_prob}")
        if self.augment.num_paraphrases < 0 or self.augment.num_distractors < 0:
            raise UldError("augment.num_paraphrases and augment.num_distractors must be >= 0")
        if self.augment.source == "file" and not self.augment.file:
            raise UldError("augment.source is 'file' but no augment.file was given")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Building a config from layers of dicts, YAML and `key=value` strings.


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise unknown_choice(f"value for {key}", value, choices)


def _positive(key: str, value: int) -> None:
    if value < 1:
        raise UldError(f"{key} must be >= 1, got {value}")


def option_names(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every settable key, dotted (`train.lr`); `loss.*` keys are checked against the method."""
    names = []
    for f in dataclasses.fields(cls):
        sub = _dataclass_type(cls, f)
        if sub is not None:
            names += option_names(sub, f"{prefix}{f.name}.")
        else:
            names.append(f"{prefix}{f.name}")
    return names


def _dataclass_type(cls: type, f: dataclasses.Field) -> type | None:
    hint = typing.get_type_hints(cls)[f.name]
    return hint if dataclasses.is_dataclass(hint) else None


def _coerce(key: str, hint: Any, value: Any) -> Any:
    """Convert a YAML/CLI value to the field's type, with a one-sentence error."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None:
        if type(None) in args or hint is Any:
            return None
        raise UldError(f"option {key} cannot be empty")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, inner[0], value)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "1", "on"):
                return True
            if str(value).lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)  # YAML reads "1e-3" as a string: float() accepts it
        if hint is str:
            return str(value)
        if origin in (list, tuple):
            items = [value] if isinstance(value, str) else list(value)
            return origin(str(v) if args and args[0] is str else float(v) for v in items)
    except (TypeError, ValueError):
        pass
    else:
        return value
    name = getattr(hint, "__name__", str(hint))
    raise UldError(f"option {key} expects a {name}, got {value!r}")


def apply_overrides(cfg: dict[str, Any], overrides: dict[str, Any], where: str) -> dict[str, Any]:
    """Merge a nested dict of overrides into a nested config dict, checking every key."""
    valid = option_names()
    sections = {f.name for f in dataclasses.fields(RunConfig) if _dataclass_type(RunConfig, f)}
    for key, value in _flatten(overrides):
        head = key.split(".", 1)[0]
        if head == "loss" and "." in key:
            cfg.setdefault("loss", {})[key.split(".", 1)[1]] = value
            continue
        if head == "loss" and isinstance(value, dict):
            cfg.setdefault("loss", {}).update(value)
            continue
        if key not in valid:
            err = str(unknown_choice("option", key, valid + ["loss.<method option>"]))
            raise UldError(err.replace(f"option {key!r}", f"option {key!r}{where}", 1))
        if head in sections:
            cfg.setdefault(head, {})[key.split(".", 1)[1]] = value
        else:
            cfg[key] = value
    return cfg


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key != "loss":
            out += _flatten(v, f"{key}.")
        else:
            out.append((key, v))
    return out


def parse_set(items: list[str]) -> dict[str, Any]:
    """`["train.lr=1e-4", "loss.beta=5"]` -> nested dict; values are read as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UldError(f"--set expects key=value (e.g. train.lr=1e-4), got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UldError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UldError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise UldError(f"config file {p} must hold a mapping of options, not a {type(data).__name__}")
    return data


def build_config(*layers: tuple[dict[str, Any], str]) -> RunConfig:
    """Build a RunConfig from `(overrides, where)` layers applied in order, e.g.
    `build_config((load_yaml(f), f" in {f}"), (flags, ""), (parse_set(sets), " in --set"))`."""
    merged: dict[str, Any] = {}
    for overrides, where in layers:
        apply_overrides(merged, overrides, where)
    return from_dict(merged)


def from_dict(d: dict[str, Any]) -> RunConfig:
    """A RunConfig from a (possibly partial) nested dict, with types checked and coerced."""
    hints = typing.get_type_hints(RunConfig)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(RunConfig):
        if f.name not in d:
            continue
        sub = _dataclass_type(RunConfig, f)
        if sub is not None:
            sub_hints = typing.get_type_hints(sub)
            kwargs[f.name] = sub(
                **{k: _coerce(f"{f.name}.{k}", sub_hints[k], v) for k, v in (d[f.name] or {}).items()}
            )
        elif f.name == "loss":
            kwargs["loss"] = dict(d["loss"] or {})
        else:
            kwargs[f.name] = _coerce(f.name, hints[f.name], d[f.name])
    return RunConfig(**kwargs)


def to_yaml(cfg: RunConfig) -> str:
    import yaml

    d = cfg.to_dict()
    d["train"]["adam_betas"] = list(d["train"]["adam_betas"])
    return yaml.safe_dump(d, sort_keys=False)
