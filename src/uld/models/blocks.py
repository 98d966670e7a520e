"""Finding a causal LM's decoder blocks and cutting a model down to its first K of them.

Shared by the ULD assistant (which shares the target's tensors) and the offset model (a real
copy): both are "the target's embeddings, first K blocks, final norm and head", run by the
family's own `forward` once the block list and the config say K layers.
"""

from __future__ import annotations

from torch import nn

from uld.errors import UldError


def find_decoder_blocks(target: nn.Module) -> tuple[str, nn.ModuleList]:
    """Return `(qualified name inside target, block list)`; UldError when there is none to cut.

    The blocks are the `nn.ModuleList` under `get_decoder()` whose length is the config's
    `num_hidden_layers` (Llama/Mistral/Qwen2/Phi-3 `model.layers`, GPT-NeoX `gpt_neox.layers`,
    GPT-2 `transformer.h`).
    """
    name = type(target).__name__
    config = getattr(target, "config", None)
    if config is None:
        raise UldError(f"cannot split {name}: it is not a transformers model (no config)")
    text_config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    if getattr(config, "is_encoder_decoder", False):
        raise UldError(
            f"cannot split {name}: it is an encoder-decoder model, and ULD needs a decoder-only causal LM"
        )
    n_layers = getattr(text_config, "num_hidden_layers", None)
    if not isinstance(n_layers, int) or n_layers < 1:
        raise UldError(f"cannot split {name}: its config gives no number of decoder layers")
    head = target.get_output_embeddings() if hasattr(target, "get_output_embeddings") else None
    if head is None:
        raise UldError(f"cannot split {name}: it has no output head (get_output_embeddings() is None)")
    decoder = target.get_decoder() if hasattr(target, "get_decoder") else None
    if decoder is None or decoder is target:
        decoder = getattr(target, "base_model", target)
    # Direct children first (every supported family keeps its blocks there); a deeper search only
    # when none is, so an MoE expert list that happens to have n entries cannot shadow the blocks.
    is_blocks = lambda m: isinstance(m, nn.ModuleList) and len(m) == n_layers  # noqa: E731
    candidates = [m for m in decoder.children() if is_blocks(m)]
    if not candidates:
        candidates = [m for m in decoder.modules() if is_blocks(m)]
    if len(candidates) != 1:
        why = "none" if not candidates else f"{len(candidates)} (ambiguous)"
        raise UldError(
            f"cannot split {name}: expected one list of its {n_layers} decoder blocks under "
            f"get_decoder(), found {why}"
        )
    blocks = candidates[0]
    qualified = next(n for n, m in target.named_modules() if m is blocks)
    return qualified, blocks


def check_block_count(k: object, n: int, what: str) -> int:
    """K as an int with 1 <= K < n, else one UldError naming `what` (e.g. "the assistant")."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise UldError(f"{what}'s layer count K must satisfy 1 <= K < {n} (the target's decoder layers), got {k!r}")
    return k


def truncate_blocks(model: nn.Module, blocks_path: str, k: int) -> None:
    """Cut `model` (in place) to its first `k` decoder blocks, and its config to match.

    The block list at `blocks_path` is replaced by a list of its first K blocks (the same block
    objects), `config.num_hidden_layers` becomes K, and every per-layer list of the config (a
    key naming "layer" whose list has one entry per block, e.g. `layer_types`) is cut to K.
    """
    parent_path, _, attr = blocks_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    blocks = getattr(parent, attr)
    n = len(blocks)
    setattr(parent, attr, nn.ModuleList(list(blocks)[:k]))
    config = model.config
    config.num_hidden_layers = k
    for key, value in list(vars(config).items()):
        if "layer" in key and isinstance(value, list | tuple) and len(value) == n:
            setattr(config, key, type(value)(value[:k]))
