"""The ULD model: `target - w * assistant` on the target's plausible set, a transformers causal LM.

- `combine`: the pure arithmetic (the plausibility filter, the logit difference, the sparse head);
- `cache`: `ULDCache`, the target's and the assistant's KV caches advanced together;
- `config`: `ULDConfig`, a run directory's `config.json`;
- `model`: `ULDForCausalLM`, forward and generation;
- `fused`: the inference pass through the shared first K blocks for both models at once;
- `io`: the run directory (saving, loading, finding the target again); `identity`: the target's
  fingerprint.

`register_auto_classes` makes `AutoConfig` / `AutoModelForCausalLM` (and so `pipeline`, lm-eval)
open run directories; importing `uld` arranges it (see `uld.models.uld.auto`).
"""

import importlib

_HOMES = {
    "ULDCache": "cache",
    "SPARSE_HEAD_FAMILIES": "combine", "combine_logits": "combine", "combine_with_head": "combine",
    "plausibility_mask": "combine", "sparse_head_parts": "combine",
    "ULDConfig": "config",
    "ULDForCausalLM": "model",
}


def __getattr__(name: str):
    # Lazy: transformers imports `uld.models.uld.config` while it is itself loading (to register
    # the config with AutoConfig), when the model module could not be imported yet.
    if name in _HOMES:
        return getattr(importlib.import_module(f"uld.models.uld.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'uld.models.uld' has no attribute {name!r}")


__all__ = sorted(_HOMES)
