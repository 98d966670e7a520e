"""Relearning probe: a few dozen fine-tuning steps on part of the forget set, measured on the rest.

Hu et al. 2024 (arXiv 2406.13356, "Jogging the memory of unlearned LLMs through targeted
relearning attacks") and Lucki et al. 2024 (arXiv 2410.08827, "An adversarial perspective on
machine unlearning for AI safety") show that a little fine-tuning on a small, related part of
the forgotten data (or even on unrelated data) brings the rest back when unlearning only hid it.

The forget items are split with the audit's seed: `relearn_fraction` of them (at least one) are
the attacker's data, the others are measured. Two variants:
- `forget_part`: the attacker fine-tunes on its part of the forget set;
- `retain_only` (benign): the same number of retain QA pairs, no forget data at all.
Each runs `relearn_steps` steps of Adam (lr `relearn_lr`, `relearn_batch` pairs a step, answer
tokens' NLL) on a copy of the model; 0 steps measures the untouched copy.

Threat model (who holds which weights), by how the model is served:
- a plain model (full fine-tune, LoRA merged or not): the attacker has the weights and trains a
  LoRA (rank `relearn_rank`, every linear layer of the decoder blocks) on them;
- ULD: the attacker holds the served pair and fine-tunes *the served model's output*
  (target - alpha * assistant) with a LoRA on the target; the assistant stays frozen, as
  deployed. (Holding the target alone is no attack at all: it never forgot; see `components`.)
- offset unlearning: likewise, a LoRA on the target under the served sum, both small models frozen.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from uld.audit.base import AuditContext, Subject, Variant, measure, probe, scorer_for


def relearn_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(attacker's item indices, measured item indices), disjoint, both sorted."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    k = min(n - 1, max(1, round(fraction * n)))
    return np.sort(order[:k]), np.sort(order[k:])


def _backbone(model: nn.Module, kind: str) -> nn.Module:
    """The network the attacker's LoRA goes on: the target for ULD / offset, else the model."""
    if kind in ("uld", "offset"):
        return model.target
    base = getattr(model, "base_model", None)
    if base is not None and hasattr(model, "merge_and_unload"):  # a peft model: its adapter merged in the copy
        return model.merge_and_unload()
    return model


def attach_lora(backbone: nn.Module, rank: int) -> list[nn.Parameter]:
    """Freeze everything, put a LoRA (alpha = 2 * rank, no dropout) on every linear layer of the
    decoder blocks; returns the LoRA parameters (B starts at 0, so the model is unchanged)."""
    from peft import LoraConfig, inject_adapter_in_model
    from transformers.pytorch_utils import Conv1D

    from uld.models.assistant import find_decoder_blocks

    path, blocks = find_decoder_blocks(backbone)
    names = [f"{path}.{i}.{rel}" for i, b in enumerate(blocks) for rel, m in b.named_modules()
             if rel and isinstance(m, nn.Linear | Conv1D)]
    for p in backbone.parameters():
        p.requires_grad_(False)
    conv = all(isinstance(backbone.get_submodule(n), Conv1D) for n in names)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=names, fan_in_fan_out=conv, bias="none")
    inject_adapter_in_model(cfg, backbone, adapter_name="attack")
    params = [p for n, p in backbone.named_parameters() if ".lora_A." in n or ".lora_B." in n]
    for p in params:
        p.requires_grad_(True)
    return params


def served_logits(model: nn.Module, kind: str, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The served model's logits with gradients through the target (offset's own forward runs its
    target without gradients, so its sum is written out here)."""
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    if kind == "offset":
        kw = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
        t = model.target(**kw).logits.float()
        with torch.no_grad():
            delta = model.offset(**kw).logits.float() - model.base(**kw).logits.float()
        return t + model.scale * delta
    return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()


def relearned_copy(sub: Subject, records: list[dict], steps: int, ctx: AuditContext) -> nn.Module:
    """A copy of `sub.model` after `steps` LoRA steps on `records` (the original is untouched)."""
    from uld.data.collate import pad_batch
    from uld.data.prompts import encode_qa

    s = ctx.settings
    model = copy.deepcopy(sub.model)
    if hasattr(model, "fused"):
        model.fused = False  # the attacker's LoRA sits on the target's modules only
    backbone = _backbone(model, sub.kind)
    if backbone is not model and sub.kind == "plain":
        model = backbone
    torch.manual_seed(s.seed)  # the LoRA's A matrices: the attack is a function of the model and the settings
    params = attach_lora(backbone, s.relearn_rank)
    model.eval()  # no dropout: the attack is deterministic given the seed
    if steps == 0:
        return model
    enc = [encode_qa(sub.tokenizer, r["question"], r["answer"], s.prompt_format, s.max_length) for r in records]
    pad = sub.tokenizer.pad_token_id if sub.tokenizer.pad_token_id is not None else 0
    opt = torch.optim.Adam(params, lr=s.relearn_lr)
    rng = np.random.default_rng(s.seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < s.relearn_batch:
            order += rng.permutation(len(enc)).tolist()
        batch_idx, order = order[: s.relearn_batch], order[s.relearn_batch :]
        batch = pad_batch([enc[i] for i in batch_idx], pad)
        ids, mask = batch["input_ids"].to(s.device), batch["attention_mask"].to(s.device)
        labels = batch["labels"].to(s.device)
        logits = served_logits(model, sub.kind, ids, mask)
        loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                                           ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)
    return model


@probe("relearn")
def relearn_probe(ctx: AuditContext) -> list[Variant]:
    s = ctx.settings
    n = len(ctx.items)
    if n < 2:
        v = Variant("forget_part", "relearning", unavailable="relearning needs at least 2 forget items (one to train, one to measure)")
        return [v]
    attack, rest = relearn_split(n, s.relearn_fraction, s.seed)
    measured = [ctx.items[i] for i in rest]
    qs = [r["question"] for r in measured]
    train_sets = {
        "forget_part": ([ctx.items[i] for i in attack],
                        f"{s.relearn_steps} LoRA steps on {len(attack)} forget items, measured on the other {len(rest)}"),
        "retain_only": (ctx.retain[: len(attack)],
                        f"{s.relearn_steps} LoRA steps on {min(len(attack), len(ctx.retain))} retain items (benign), "
                        f"measured on the same {len(rest)} forget items"),
    }
    variants = []
    for name, (records, desc) in train_sets.items():
        v = Variant(name, desc, idx=rest, extra={"attack_items": attack.tolist(), "steps": s.relearn_steps, "lr": s.relearn_lr,
                                                  "rank": s.relearn_rank})
        if not records:
            v.unavailable = "no retain records to train on"
            variants.append(v)
            continue
        for sname, sub in ctx.subjects.items():
            ctx.log(f"audit: relearn/{name} on {sname} ({s.relearn_steps} steps)")

            def relearned(sub=sub, records=records):
                model = relearned_copy(sub, records, s.relearn_steps, ctx)
                return _expand(measure(scorer_for(model, sub.tokenizer, s), qs, measured, s), rest, n)

            v.results[sname] = ctx.cached(sub, f"relearn/{name}", relearned)
        variants.append(v)
    return variants


def _expand(m, idx: np.ndarray, n: int):
    """Measures on the items `idx` placed into arrays over all n items (NaN elsewhere), so every
    variant is indexed like the forget set."""
    from uld.audit.base import Measures

    def put(a, fill=np.nan):
        if a is None:
            return None
        out = np.full(n, fill, dtype=float)
        out[idx] = a
        return out

    gens: list = [None] * n
    for j, i in enumerate(idx):
        gens[i] = m.generations[j]
    leak = np.zeros(n, dtype=bool)
    leak[idx] = m.leak
    return Measures(prob=put(m.prob), rouge=put(m.rouge), r=put(m.r), leak=leak, generations=gens)
