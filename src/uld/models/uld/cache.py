"""The ULD model's cache: the target's and the assistant's caches, plus the fused pass's buffers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from transformers.cache_utils import Cache

from uld.models.caches import MultiCache

if TYPE_CHECKING:
    from uld.models.uld.fused import KVSlot


class ULDCache(MultiCache):
    """One cache for the target and one for the assistant, advanced together.

    `fused_kv` holds, per shared layer, the buffer in which the fused pass keeps both models'
    keys and values (`uld.models.uld.fused.KVSlot`); each model's own cache holds views of it.
    Any change to the caches (crop, reorder, reset, batch selection) drops the buffers: the next
    fused step rebuilds them from the caches.
    """

    def __init__(self, target: Cache, assistant: Cache):
        super().__init__(target=target, assistant=assistant)
        self.fused_kv: dict[int, KVSlot] = {}

    @property
    def target(self) -> Cache:
        return self.caches["target"]

    @property
    def assistant(self) -> Cache:
        return self.caches["assistant"]

    def changed(self) -> None:
        self.fused_kv = {}
