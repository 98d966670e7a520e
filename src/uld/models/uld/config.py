"""`ULDConfig`: the settings of a ULD model, saved as a run directory's `config.json`.

It is a transformers `PreTrainedConfig` (model_type "uld", registered with `AutoConfig` when
`uld` is imported), so every transformers loader can read a run directory. Besides ULD's own
settings it repeats the target's fields that clients read from a model's config (context length,
vocabulary, special token ids, hidden size): lm-eval, for instance, takes its context length from
`max_position_embeddings`.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from uld.models.defaults import ASSISTANT_WEIGHT, FILTER_RATE, LORA_ALPHA, LORA_DROPOUT, LORA_RANK

# Fields copied from the target's (text) config, under the same names.
TARGET_FIELDS = ("vocab_size", "max_position_embeddings", "hidden_size", "bos_token_id", "eos_token_id",
                 "pad_token_id")


@strict(accept_kwargs=True)
class ULDConfig(PreTrainedConfig):
    """Settings of a ULD model.

    assistant_weight: w, the weight of the assistant's logits, `target - w * assistant` (the
        paper's alpha: 0.75 on TOFU, 0.5 on Harry Potter).
    filter_rate: plausibility rate r (paper: 1e-2); 0 turns the filter off.
    num_layers: K, the assistant's decoder blocks (paper: a quarter of the target's).
    lora_rank / lora_alpha / lora_dropout / target_modules: the assistant's adapter (paper: 32 / 32 /
        0.05 / every linear layer in the blocks); rank 0 means a trainable copy of the K blocks.
    norm_scale: > 0 when the assistant has its own final norm (saved with the adapter; its gain
        started at the target's x norm_scale); 0: the target's, shared (the paper's).
    target_name_or_path: the target: a hub id, or a directory (in a saved run, relative to the
        run directory when the target is local).
    target_saved_from: the target's absolute directory when the run was saved, tried when the
        relative path finds nothing (a run saved in a temporary directory and then moved).
    target_fingerprint: the target's architecture and a sample of its weights, recorded at save and
        checked at load (`uld.models.uld.identity`).
    target_model_type: the target's model_type (e.g. "llama").
    vocab_size, max_position_embeddings, hidden_size, bos/eos/pad_token_id: the target's.
    """

    model_type = "uld"

    assistant_weight: float = ASSISTANT_WEIGHT
    filter_rate: float = FILTER_RATE
    num_layers: int = 1
    lora_rank: int = LORA_RANK
    lora_alpha: float = LORA_ALPHA
    lora_dropout: float = LORA_DROPOUT
    target_modules: list[str] | None = None
    norm_scale: float = 0.0
    target_name_or_path: str | None = None
    target_saved_from: str | None = None
    target_fingerprint: dict | None = None
    target_model_type: str | None = None
    vocab_size: int | None = None
    max_position_embeddings: int | None = None
    hidden_size: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False  # the ULD model ties nothing itself; the target keeps its own ties

    def __post_init__(self, **kwargs: Any):
        # Run directories written before the rename stored the assistant weight as "alpha".
        if "alpha" in kwargs:
            self.assistant_weight = float(kwargs.pop("alpha"))
        super().__post_init__(**kwargs)
        register_model()


_registered = False


def register_model() -> None:
    """Register `ULDForCausalLM` with `AutoModelForCausalLM` (once; on the first `ULDConfig`, which
    every transformers loader makes before it looks for the model class)."""
    global _registered
    if _registered:
        return
    _registered = True
    from transformers import AutoModelForCausalLM

    from uld.models.uld.model import ULDForCausalLM

    AutoModelForCausalLM.register(ULDConfig, ULDForCausalLM, exist_ok=True)


def target_fields(target_config: Any) -> dict[str, Any]:
    """The `TARGET_FIELDS` of a target's config (its text config for multimodal ones)."""
    cfg = target_config.get_text_config(decoder=True) if hasattr(target_config, "get_text_config") else target_config
    out = {key: getattr(cfg, key, None) for key in TARGET_FIELDS}
    out["target_model_type"] = getattr(cfg, "model_type", None)
    return out
