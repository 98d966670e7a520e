"""One cache object for a model made of several causal LMs (ULD: target + assistant; offset
unlearning: target + offset + its frozen start), each keeping its own KV cache.

transformers' `generate` sees one `Cache`: its queries (sequence length, mask sizes) are
answered by the first model's cache (all of them advance together, one token per step), and
every change (crop, reorder for beam search, batch selection, reset) is applied to all of them.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache


class MultiCache(Cache):
    """Named caches advanced together; `caches` maps a name to the cache of that model."""

    def __init__(self, **caches: Cache):  # no super().__init__: no layers of its own
        if not caches:
            raise ValueError("MultiCache needs at least one cache")
        self.caches: dict[str, Cache] = dict(caches)
        self._first = next(iter(self.caches.values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.caches.items())
        return f"{type(self).__name__}({inner})"

    def __len__(self) -> int:
        return len(self._first)

    @property
    def layers(self):
        return self._first.layers

    def update(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__} holds one cache per model; pass each model its own")

    # -- queries: the first model's cache --------------------------------------------------
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._first.get_seq_length(layer_idx)

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return self._first.get_max_length(layer_idx)

    def get_mask_sizes(self, query_length: int, layer_idx: int) -> tuple[int, int]:
        return self._first.get_mask_sizes(query_length, layer_idx)

    def get_query_offset(self, layer_idx: int = 0) -> int:
        return self._first.get_query_offset(layer_idx)

    def has_previous_state(self, *args, **kwargs) -> bool:
        return self._first.has_previous_state(*args, **kwargs)

    @property
    def max_cache_len(self) -> int | None:
        return getattr(self._first, "max_cache_len", None)

    # -- changes: every cache ---------------------------------------------------------------
    def changed(self) -> None:
        """Called before every change; subclasses drop state derived from the caches here."""

    def _all(self, method: str, *args) -> None:
        self.changed()
        for cache in self.caches.values():
            getattr(cache, method)(*args)

    def reset(self) -> None:
        self._all("reset")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._all("reorder_cache", beam_idx)

    def crop(self, tokens_to_remove: int) -> None:
        self._all("crop", tokens_to_remove)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._all("batch_repeat_interleave", repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._all("batch_select_indices", indices)

    def activate_past_recording(self) -> None:
        self._all("activate_past_recording")

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_initialized(self) -> bool:
        return all(c.is_initialized for c in self.caches.values())

    @property
    def is_croppable(self) -> bool:
        return all(c.is_croppable for c in self.caches.values())

    @property
    def is_sliding(self) -> list[bool]:
        return self._first.is_sliding

    @property
    def is_linear(self) -> list[bool]:
        return self._first.is_linear

    @property
    def is_dummy(self) -> list[bool]:
        return self._first.is_dummy
