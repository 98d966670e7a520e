"""Offset unlearning (δ-unlearning; Huang et al. 2024, arXiv 2404.11045).

A small model M_o is trained next to a frozen copy M_o' of its starting point; the target M
stays frozen. The unlearned model's logits are

    logits = logits_M(x) + scale * (logits_Mo(x) - logits_Mo'(x))          (paper eq. 2, scale 1)

so before training (M_o = M_o') it equals the target exactly. The small model must share the
target's vocabulary; by default it is the target's first K decoder blocks (with embeddings,
final norm and head), a real copy.

A saved directory holds `offset_config.json`, `offset/` (the trained small model),
`offset_base/` (its frozen start) and the tokenizer; the target is referenced by hub id or
absolute path. `uld.models.loading.load_model` recognises it by `offset_config.json`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uld.errors import UldError
from uld.io import atomic_write_json

CONFIG_NAME = "offset_config.json"
OFFSET_DIR = "offset"
BASE_DIR = "offset_base"


def truncated_copy(target: nn.Module, num_layers: int) -> nn.Module:
    """A trainable copy of the target's first `num_layers` decoder blocks, embeddings and head.

    Blocks past K are put in the deepcopy memo as themselves, so they are never duplicated.
    """
    from uld.models.assistant import find_decoder_blocks

    path, blocks = find_decoder_blocks(target)
    n = len(blocks)
    if not 1 <= num_layers < n:
        raise UldError(f"the offset model's layer count K must satisfy 1 <= K < {n}, got {num_layers}")
    memo: dict[int, Any] = {id(b): b for b in list(blocks)[num_layers:]}
    small = copy.deepcopy(target, memo)
    parent_path, _, attr = path.rpartition(".")
    parent = small.get_submodule(parent_path) if parent_path else small
    setattr(parent, attr, nn.ModuleList(list(getattr(parent, attr))[:num_layers]))
    cfg = small.config
    cfg.num_hidden_layers = num_layers
    for key, value in list(vars(cfg).items()):  # per-layer lists such as `layer_types`
        if isinstance(value, list | tuple) and len(value) == n:
            setattr(cfg, key, type(value)(value[:num_layers]))
    for p in small.parameters():
        p.requires_grad_(True)
    return small


class OffsetForCausalLM(nn.Module):
    """target + scale * (offset - offset_base), callable like a causal LM.

    forward(input_ids (B, T), attention_mask (B, T), position_ids (B, T)) -> output with
    `.logits` (B, T, V). `generate` decodes greedily or by sampling without a KV cache (each
    step re-reads the prefix: simple and exact, slower than a cached model).
    """

    def __init__(self, target: nn.Module, offset: nn.Module, base: nn.Module, scale: float = 1.0):
        super().__init__()
        self.target, self.offset, self.base, self.scale = target, offset, base, float(scale)
        for p in list(target.parameters()) + list(base.parameters()):
            p.requires_grad_(False)
        self.config = target.config

    @property
    def device(self) -> torch.device:
        return next(self.target.parameters()).device

    def forward(self, input_ids, attention_mask=None, position_ids=None, **_: Any):
        from transformers.modeling_outputs import CausalLMOutput

        kw = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        with torch.no_grad():
            t = self.target(**kw).logits.float()
            b = self.base(**kw).logits.float()
        o = self.offset(**kw).logits.float()
        return CausalLMOutput(logits=t + self.scale * (o - b))

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        pad_token_id: int | None = None,
        eos_token_id: int | None = None,
        **_: Any,
    ) -> torch.Tensor:
        """Left-padded prompts (B, T) -> (B, T + new) token ids; finished rows are padded."""
        ids = input_ids
        mask = torch.ones_like(ids) if attention_mask is None else attention_mask
        eos = self.config.eos_token_id if eos_token_id is None else eos_token_id
        pad = pad_token_id if pad_token_id is not None else (eos if eos is not None else 0)
        done = torch.zeros(ids.size(0), dtype=torch.bool, device=ids.device)
        for _step in range(max_new_tokens):
            pos = (mask.cumsum(-1) - 1).clamp_min(0)
            logits = self(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
            if do_sample:
                if top_k and top_k > 0:
                    kth = logits.topk(min(top_k, logits.size(-1)), -1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits / max(temperature, 1e-5), -1)
                if top_p < 1.0:
                    sorted_p, order = probs.sort(-1, descending=True)
                    drop = sorted_p.cumsum(-1) - sorted_p > top_p
                    probs = probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
                nxt = torch.multinomial(probs, 1).squeeze(-1)
            else:
                nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            ids = torch.cat([ids, nxt[:, None]], -1)
            mask = torch.cat([mask, (~done).long()[:, None]], -1)
            if eos is not None:
                done |= nxt == eos
            if bool(done.all()):
                break
        return ids

    def save_pretrained(self, out: str | Path, target_name_or_path: str, tokenizer=None) -> Path:
        """Write the two small models, the tokenizer, then `offset_config.json` (last: a dir
        holding it is complete)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.offset.save_pretrained(out / OFFSET_DIR)
        self.base.save_pretrained(out / BASE_DIR)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        atomic_write_json(out / CONFIG_NAME, {"target_name_or_path": target_name_or_path, "scale": self.scale})
        return out

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: str | None = None) -> OffsetForCausalLM:
        from uld.models.loading import load_causal_lm

        root = Path(path)
        try:
            cfg = json.loads((root / CONFIG_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UldError(f"{str(root)!r} is not a readable offset-unlearning directory: {e}") from e
        target = load_causal_lm(cfg["target_name_or_path"], dtype=dtype)
        offset = load_causal_lm(root / OFFSET_DIR, dtype=dtype)
        base = load_causal_lm(root / BASE_DIR, dtype=dtype)
        return cls(target, offset, base, scale=cfg.get("scale", 1.0)).eval()
