"""What a method trains (the *policy*), how the loop calls it, and how the result is saved.

Four kinds, one interface:
- `uld`: the ULD assistant (target's first K blocks + LoRA); the target is never touched.
  Saved as a ULD directory (`ULDForCausalLM.from_pretrained`).
- `full`: every weight of the target (RMU: only the MLP output projections of its
  `update_layers`, as in its paper). The frozen original is a copy. Saved for
  `AutoModelForCausalLM.from_pretrained`.
- `lora`: LoRA adapters on the target (peft); the frozen original is the same model with the
  adapter switched off. Saved as a peft adapter directory.
- `offset`: δ-unlearning, a small model whose logit difference to its frozen copy is added to
  the frozen target (`uld.models.offset`); the frozen original is the target alone.

`Policy.module` is the `nn.Module` the optimizer trains and Accelerate wraps; the loop passes
the wrapped module back into `logits`, so a policy never holds distributed state itself.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uld.errors import UldError
from uld.methods.base import MethodSpec
from uld.train.config import RunConfig


class Policy:
    """Base class. Shapes: input_ids / attention_mask (B, T); logits (B, T, V); hidden (B, T, H)."""

    kind = ""

    def __init__(self, module: nn.Module, frozen: list[nn.Module]):
        self.module = module
        self.frozen = frozen  # moved to the device by the loop, kept in eval mode

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def to(self, device: torch.device) -> None:
        for m in self.frozen:
            m.to(device)

    def logits(self, module: nn.Module, batch: dict, hidden_layer: int | None = None):
        """The policy on a batch: `(logits, hidden at hidden_layer or None)`."""
        return _forward(module, batch, hidden_layer)

    def reference(self, module: nn.Module, batch: dict, hidden_layer: int | None = None):
        """The frozen original model on a batch (no gradient)."""
        raise UldError(f"policy kind {self.kind!r} has no frozen reference model")

    def save(self, module: nn.Module, out: Path, tokenizer, cfg: RunConfig) -> None:
        """Default: a transformers / peft directory with the tokenizer beside it."""
        module.save_pretrained(out)
        tokenizer.save_pretrained(out)


def _forward(model: nn.Module, batch: dict, hidden_layer: int | None):
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        output_hidden_states=hidden_layer is not None,
    )
    return out.logits, _pick_hidden(out, hidden_layer)


def _pick_hidden(out: Any, layer: int | None) -> torch.Tensor | None:
    # hidden_states[0] is the embedding output; the OUTPUT of decoder block `layer` is [layer + 1].
    return None if layer is None else out.hidden_states[layer + 1]


class ULDPolicy(Policy):
    kind = "uld"

    def __init__(self, target: nn.Module, cfg: RunConfig):
        from uld.models.assistant import build_assistant

        p = cfg.policy
        assistant = build_assistant(
            target,
            num_layers=p.num_layers or None,
            lora_rank=p.lora_rank,
            lora_alpha=p.lora_alpha,
            lora_dropout=p.lora_dropout,
            target_modules=p.target_modules,
            norm_scale=p.norm_scale,
        )
        super().__init__(assistant, [target])
        self.target = target

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.module.trainable_parameters())

    def save(self, module: nn.Module, out: Path, tokenizer, cfg: RunConfig) -> None:
        from uld.models.uld import ULDForCausalLM

        uld = ULDForCausalLM(self.target, module, assistant_weight=cfg.policy.assistant_weight,
                             filter_rate=cfg.policy.filter_rate)
        uld.save_pretrained(out, tokenizer=tokenizer)


class FullPolicy(Policy):
    kind = "full"

    def __init__(self, target: nn.Module, needs_frozen: bool, train_only: list[str] | None = None):
        frozen = copy.deepcopy(target).eval() if needs_frozen else None
        for p in frozen.parameters() if frozen is not None else []:
            p.requires_grad_(False)
        for name, p in target.named_parameters():
            p.requires_grad_(train_only is None or any(name.startswith(t) for t in train_only))
        super().__init__(target, [frozen] if frozen is not None else [])
        self.original = frozen

    def reference(self, module, batch, hidden_layer=None):
        with torch.no_grad():
            return _forward(self.original, batch, hidden_layer)


class LoraPolicy(Policy):
    kind = "lora"

    def __init__(self, target: nn.Module, cfg: RunConfig):
        from peft import LoraConfig, get_peft_model

        p = cfg.policy
        lora = LoraConfig(
            r=p.lora_rank,
            lora_alpha=p.lora_alpha,
            lora_dropout=p.lora_dropout,
            target_modules=p.target_modules or "all-linear",  # peft's "all-linear" skips the head
            bias="none",
            task_type="CAUSAL_LM",
        )
        super().__init__(get_peft_model(target, lora), [])

    def reference(self, module, batch, hidden_layer=None):
        from accelerate.utils import extract_model_from_parallel

        model = extract_model_from_parallel(module)
        with torch.no_grad(), model.disable_adapter():
            return _forward(model, batch, hidden_layer)


class OffsetPolicy(Policy):
    kind = "offset"

    def __init__(self, target: nn.Module, cfg: RunConfig):
        from uld.models.assistant import find_decoder_blocks
        from uld.models.loading import load_causal_lm
        from uld.models.offset import truncated_copy

        if cfg.policy.offset_model:
            small = load_causal_lm(cfg.policy.offset_model)
            if small.get_output_embeddings().weight.shape[0] != target.get_output_embeddings().weight.shape[0]:
                raise UldError("policy.offset_model must share the target's vocabulary (its head has a different size)")
        else:
            n = len(find_decoder_blocks(target)[1])
            small = truncated_copy(target, cfg.policy.num_layers or max(1, n // 4))
        for p in target.parameters():
            p.requires_grad_(False)
        small.train()
        for p in small.parameters():
            p.requires_grad_(True)
        base = copy.deepcopy(small).eval()
        for p in base.parameters():
            p.requires_grad_(False)
        super().__init__(small, [target, base])
        self.target, self.base = target, base

    def logits(self, module, batch, hidden_layer=None):
        if hidden_layer is not None:
            raise UldError("an offset policy has no hidden states of its own; use policy.kind full or lora for rmu")
        kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with torch.no_grad():
            fixed = self.target(**kw).logits.float() - self.base(**kw).logits.float()
        # δ-unlearning: target + (offset - offset_base); only `module` gets gradients.
        return fixed + module(**kw).logits.float(), None

    def reference(self, module, batch, hidden_layer=None):
        with torch.no_grad():
            return self.target(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, None

    def save(self, module, out, tokenizer, cfg):
        from uld.models.offset import OffsetForCausalLM

        OffsetForCausalLM(self.target, module, self.base).save_pretrained(out, cfg.model, tokenizer)


def build_policy(target: nn.Module, cfg: RunConfig, spec: MethodSpec) -> Policy:
    """The policy for `cfg.policy.kind`; what trains and whether a frozen copy is kept come
    from the method `spec` (its `needs` and its `trainable` hook)."""
    kind = cfg.policy.kind
    if kind == "uld":
        return ULDPolicy(target, cfg)
    if kind == "lora":
        return LoraPolicy(target, cfg)
    if kind == "offset":
        return OffsetPolicy(target, cfg)
    train_only = None
    if spec.trainable is not None:
        from uld.models.assistant import find_decoder_blocks

        path, blocks = find_decoder_blocks(target)
        train_only = spec.trainable(path, list(blocks), cfg.loss)
    return FullPolicy(target, needs_frozen=bool(spec.needs & {"reference", "hidden"}), train_only=train_only)
