"""Run configuration: one dataclass per concern; the only place run defaults live.

A run's config is built in layers: these defaults, then a YAML file (`--config`), then the
command's flags, then `--set section.key=value` overrides. Every key is checked against the
dataclasses, so a typo fails with "unknown option 'train.lrr'; did you mean 'train.lr'?", and
every value is converted to its field's type. `loss.*` keys are the method's own options
(a typed dataclass in the method's file), parsed the same way.

Defaults follow the papers: ULD (Ji et al. 2024, §5): AdamW, batch 32, warm-up 10 %, weight
decay 0.01, K = a quarter of the layers, LoRA r 32 / alpha 32 / dropout 0.05. The learning
rate and the epoch count default to the method's own (its `register_method` line: ULD 1e-3,
RMU 5e-5, the other baselines TOFU's 1e-5; 10 epochs).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uld.errors import UldError, unknown_choice
from uld.methods.base import POLICY_KINDS, Options, get_method
from uld.models.defaults import ASSISTANT_WEIGHT, FILTER_RATE, LORA_ALPHA, LORA_DROPOUT, LORA_RANK
from uld.options import check_range, coerce

AUGMENT_SOURCES = ("auto", "none", "fields", "file")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
SCHEDULES = ("linear", "cosine", "constant")

# Options that were renamed; the old name is refused with a pointer to the new one.
RENAMED = {"policy.alpha": "policy.assistant_weight"}


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
    """ULD's data augmentation (Ji et al. 2024, §4.2): D'_f = forget + paraphrases, D'_r = retain + wrong answers."""

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
    """'uld', 'full', 'lora' or 'offset'; '' = the method's first policy kind (uld: 'uld', others: 'full')."""
    num_layers: int = 0
    """ULD assistant / offset model layers K; 0 = a quarter of the target's layers (paper: 8 of 32)."""
    lora_rank: int = LORA_RANK
    """LoRA rank (paper: 32); for ULD 0 trains a private copy of the K blocks instead."""
    lora_alpha: float = LORA_ALPHA
    """LoRA alpha, the adapter's scale numerator (paper: 32)."""
    lora_dropout: float = LORA_DROPOUT
    """LoRA dropout (paper: 0.05)."""
    target_modules: list[str] | None = None
    """Linear layers that get LoRA (None: every linear layer in the decoder blocks)."""
    norm_scale: float = 0.0
    """ULD only, not in the paper: > 0 trains a private copy of the final norm in the assistant, its
    gain starting at the target's x norm_scale (0: the target's norm, shared and frozen)."""
    assistant_weight: float = ASSISTANT_WEIGHT
    """ULD weight, the paper's alpha: logits = target - assistant_weight * assistant (paper: 0.75 on TOFU)."""
    filter_rate: float = FILTER_RATE
    """ULD plausibility filter rate r in [0, 1] (paper: 1e-2; 0 turns the filter off)."""
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
    """Stop when the policy's mean forget-answer probability reaches this (checked each epoch). For ULD: a small
    assistant trained for the paper's fixed 10 epochs may never memorise the forget set, and then the
    subtraction removes little; training until it does (e.g. 0.9) is what makes it work at small scale."""
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
    loss: Any = field(default_factory=dict)
    """The method's options (e.g. loss.beta): a dict of overrides, turned into the method's typed options."""

    def __post_init__(self) -> None:
        self.resolve()

    def resolve(self) -> RunConfig:
        """Fill the method's defaults, type its options and check every value (UldError on a bad one)."""
        spec = get_method(self.method)
        self.loss = spec.parse_options(self.loss)
        if self.train.lr is None:
            self.train.lr = spec.lr
        if self.train.epochs is None:
            self.train.epochs = spec.epochs
        if not self.policy.kind:
            self.policy.kind = spec.policies[0]
        _choice("policy.kind", self.policy.kind, POLICY_KINDS)
        _choice("augment.source", self.augment.source, AUGMENT_SOURCES)
        _choice("train.mixed_precision", self.train.mixed_precision, MIXED_PRECISION)
        _choice("train.schedule", self.train.schedule, SCHEDULES)
        if self.policy.kind not in spec.policies:
            raise UldError(
                f"policy.kind {self.policy.kind!r} does not fit method {self.method!r}, "
                f"which trains policy kind(s) {', '.join(spec.policies)}"
            )
        _check_values(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["loss"] = self.loss.to_dict() if isinstance(self.loss, Options) else dict(self.loss)
        return _plain(d)


def _plain(obj: Any) -> Any:
    # Tuples become lists, so the dict dumps as plain YAML / JSON.
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _check_values(c: RunConfig) -> None:
    """Ranges of every numeric option, checked before a run creates anything."""
    t, p, d, a = c.train, c.policy, c.data, c.augment
    _positive("train.epochs", t.epochs)
    _positive("train.batch_size", t.batch_size)
    _positive("train.log_every", t.log_every)
    _positive("train.keep_checkpoints", t.keep_checkpoints)
    if d.max_length < 2:
        raise UldError(f"option data.max_length must be >= 2 (a prompt token and an answer token), got {d.max_length}")
    check_range("train.lr", t.lr, low=0.0, low_open=True)
    if t.micro_batch_size < 0:
        raise UldError(f"option train.micro_batch_size must be >= 0 (0 = no accumulation), got {t.micro_batch_size}")
    if t.micro_batch_size and t.batch_size % t.micro_batch_size:
        raise UldError(
            f"option train.batch_size={t.batch_size} is not a multiple of train.micro_batch_size={t.micro_batch_size}"
        )
    check_range("train.warmup_ratio", t.warmup_ratio, 0.0, 1.0, high_open=True)
    check_range("train.weight_decay", t.weight_decay, low=0.0)
    check_range("train.max_grad_norm", t.max_grad_norm, low=0.0)
    if len(t.adam_betas) != 2:
        raise UldError(f"option train.adam_betas must hold two numbers, got {list(t.adam_betas)}")
    for i, beta in enumerate(t.adam_betas):
        check_range(f"train.adam_betas[{i}]", beta, 0.0, 1.0, high_open=True)
    if t.stop_forget_prob is not None:
        check_range("train.stop_forget_prob", t.stop_forget_prob, 0.0, 1.0, low_open=True)
    if t.stop_after_epoch is not None:
        _positive("train.stop_after_epoch", t.stop_after_epoch)
    if p.num_layers < 0:
        raise UldError(f"option policy.num_layers must be >= 0 (0 = a quarter of the target's layers), got {p.num_layers}")
    if p.lora_rank < 0 or (p.lora_rank == 0 and p.kind != "uld"):
        low = 0 if p.kind == "uld" else 1
        raise UldError(f"option policy.lora_rank must be >= {low}, got {p.lora_rank}")
    check_range("policy.lora_alpha", p.lora_alpha, low=0.0, low_open=True)
    check_range("policy.lora_dropout", p.lora_dropout, 0.0, 1.0, high_open=True)
    check_range("policy.norm_scale", p.norm_scale, low=0.0)
    if p.norm_scale > 0 and p.kind != "uld":
        raise UldError(f"option policy.norm_scale applies to the ULD assistant only, not to a {p.kind!r} policy")
    check_range("policy.assistant_weight", p.assistant_weight, low=0.0)
    check_range("policy.filter_rate", p.filter_rate, 0.0, 1.0)
    if p.target_modules is not None and not p.target_modules:
        raise UldError("option policy.target_modules must name at least one layer (or be left out for all)")
    if a.num_paraphrases < 0 or a.num_distractors < 0:
        raise UldError("options augment.num_paraphrases and augment.num_distractors must be >= 0")
    if a.source == "file" and not a.file:
        raise UldError("augment.source is 'file' but no augment.file was given")
    if c.seed < 0:
        raise UldError(f"option seed must be >= 0, got {c.seed}")


# --------------------------------------------------------------------------------------------
# Building a config from layers of dicts, YAML and `key=value` strings.


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise unknown_choice(f"value for {key}", value, choices)


def _positive(key: str, value: int) -> None:
    if value < 1:
        raise UldError(f"option {key} must be >= 1, got {value}")


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
        if key in RENAMED:
            raise UldError(f"option {key}{where} was renamed: did you mean {RENAMED[key]!r}?")
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
                **{k: coerce(f"{f.name}.{k}", sub_hints[k], v) for k, v in (d[f.name] or {}).items()}
            )
        elif f.name == "loss":
            kwargs["loss"] = dict(d["loss"] or {})
        else:
            kwargs[f.name] = coerce(f.name, hints[f.name], d[f.name])
    return RunConfig(**kwargs)


def to_yaml(cfg: RunConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def make_config(**options: Any) -> RunConfig:
    """A RunConfig from keyword options, dotted keys spelled with `__`:
    `make_config(model="m", method="uld", train__lr=3e-3, policy__num_layers=2)`. Every key and
    value goes through the same checks as `--set`; the one way code assembles a config."""
    nested: dict[str, Any] = {}
    for key, value in options.items():
        nested[key.replace("__", ".")] = value
    return build_config((nested, ""))
