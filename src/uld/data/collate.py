"""Records -> encoded QA items -> padded batches, and the forget/retain pairing of each step.

Data order is a pure function of (seed, epoch, rank): the loop needs no sampler state beyond
the epoch it is in, so a run resumed at an epoch boundary draws exactly the batches the
uninterrupted run would have drawn. Under several processes the forget set is split between
the ranks (each item once per epoch) and each rank draws a *different* slice of every retain
permutation, so no two ranks train on the same retain sample within a pass over the retain set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from uld.data.prompts import IGNORE_INDEX, EncodedQA, PromptFormat, encode_qa
from uld.data.records import Record


@dataclass
class EncodedSet:
    """A list of encoded items plus how many of them had their answer cut by `max_length`."""

    items: list[EncodedQA]
    truncated: int

    def __len__(self) -> int:
        return len(self.items)


def encode_records(
    tokenizer, records: Sequence[Record], fmt: PromptFormat | None = None, max_length: int | None = None
) -> EncodedSet:
    """Encode each record's (question, answer) with `encode_qa`; `meta["index"]` is its position."""
    items = []
    for i, r in enumerate(records):
        enc = encode_qa(tokenizer, str(r["question"]), str(r["answer"]), fmt, max_length)
        enc.meta = {"index": i}
        items.append(enc)
    return EncodedSet(items, sum(e.truncated for e in items))


def pad_batch(items: Sequence[EncodedQA], pad_id: int, length: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad a list of items into tensors.

    Returns `input_ids` (B, T) padded with `pad_id`, `attention_mask` (B, T) with 1 on real
    tokens, `labels` (B, T) with -100 on the prompt and the padding. T is the longest item, or
    `length` when given (so several groups can share one forward pass).
    """
    t = max(len(e.input_ids) for e in items) if length is None else length
    ids = torch.full((len(items), t), pad_id, dtype=torch.long)
    labels = torch.full((len(items), t), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(items), t), dtype=torch.long)
    for b, e in enumerate(items):
        n = len(e.input_ids)
        ids[b, :n] = torch.tensor(e.input_ids)
        labels[b, :n] = torch.tensor(e.labels)
        mask[b, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token-id rows for generation: `(input_ids, attention_mask)`, both (B, T), T the
    longest row. Every row ends at column T-1, so decoding continues all rows at the same step;
    the mask is 0 on the padding (pass it, and the position ids it implies, to every model)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        if r:
            ids[b, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
            mask[b, width - len(r):] = 1
    return ids, mask


def right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token-id rows for scoring: `(input_ids, attention_mask)`, both (B, T), T the
    longest row. Row b's tokens sit at positions 0..len-1, so positions need no shifting; the mask
    is 0 on the padding."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        if r:
            ids[b, : len(r)] = torch.tensor(list(r), dtype=torch.long)
            mask[b, : len(r)] = 1
    return ids, mask


def _permutation(n: int, *key: int) -> list[int]:
    # A generator seeded from the key alone (not the global RNG): order depends on nothing else.
    g = torch.Generator().manual_seed(hash_key(*key))
    return torch.randperm(n, generator=g).tolist()


def hash_key(*key: int) -> int:
    """A stable 63-bit seed from integers (FNV-1a style mixing), the same on every machine."""
    h = 1469598103934665603
    for k in key:
        h = ((h ^ (k & 0xFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h


@dataclass(frozen=True)
class PairedSchedule:
    """Which forget / retain items each micro-step of an epoch uses, on one rank.

    - forget: each epoch a permutation of the forget set (same on every rank), padded by
      wrapping so it divides evenly, and dealt out round-robin: rank r takes positions r, r+W, ...
    - retain: an endless stream of permutations of the retain set, one per pass, each dealt out
      the same way, so within a pass the ranks' retain samples are disjoint.
    `micro_batch` items per micro-step; every rank runs the same number of micro-steps.
    """

    num_forget: int
    num_retain: int
    micro_batch: int
    seed: int = 0
    rank: int = 0
    world: int = 1

    @property
    def forget_per_rank(self) -> int:
        return math.ceil(self.num_forget / self.world)

    @property
    def micro_steps(self) -> int:
        """Micro-steps per epoch (the last micro-batch may be smaller)."""
        return math.ceil(self.forget_per_rank / self.micro_batch)

    def forget_indices(self, epoch: int) -> list[list[int]]:
        perm = _permutation(self.num_forget, self.seed, epoch, 0)
        total = self.forget_per_rank * self.world
        padded = (perm * math.ceil(total / len(perm)))[:total]
        mine = padded[self.rank :: self.world]
        return [mine[i : i + self.micro_batch] for i in range(0, len(mine), self.micro_batch)]

    def retain_indices(self, epoch: int) -> list[list[int]]:
        """Retain micro-batches matching `forget_indices(epoch)` in number and sizes."""
        if self.num_retain == 0:
            return [[] for _ in range(self.micro_steps)]
        sizes = [len(b) for b in self.forget_indices(epoch)]
        need = sum(sizes)
        stream: list[int] = []
        p = 0
        while len(stream) < need:
            perm = _permutation(self.num_retain, self.seed, epoch, 1, p)
            total = math.ceil(self.num_retain / self.world) * self.world
            padded = (perm * math.ceil(total / len(perm)))[:total]
            stream += padded[self.rank :: self.world]
            p += 1
        out, i = [], 0
        for s in sizes:
            out.append(stream[i : i + s])
            i += s
        return out
