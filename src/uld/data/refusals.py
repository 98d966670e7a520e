"""Refusal answers for IdkPO (DPO with "I don't know" as the preferred answer).

Written for this project: 40 varied sentences that decline to answer without inventing facts.
`pick_refusal` chooses one per item deterministically (a stable hash, not Python's salted
`hash`), so the same question gets the same refusal on every run, rank and machine.
"""

from __future__ import annotations

import hashlib

REFUSALS: tuple[str, ...] = (
    "I don't know the answer to that.",
    "I'm not sure about that.",
    "I have no information on that.",
    "That is something I can't answer.",
    "I'm afraid I don't know.",
    "I can't say, I don't have that information.",
    "Sorry, I don't have an answer to that question.",
    "I have no reliable knowledge about this.",
    "I'm unable to answer that.",
    "I really couldn't tell you.",
    "That's beyond what I know.",
    "I don't have any details about that.",
    "I'm not aware of the answer.",
    "I wish I could help, but I don't know.",
    "I have no idea, to be honest.",
    "I cannot recall anything about that.",
    "I'm not familiar with that.",
    "Unfortunately, I don't know the answer.",
    "I can't provide an answer to that question.",
    "I don't have enough information to answer.",
    "Nothing I know would let me answer that.",
    "I'm not in a position to answer that.",
    "I lack the knowledge to answer this.",
    "That's not something I have information about.",
    "I'm uncertain, so I'd rather not guess.",
    "I'd be guessing, and I don't want to mislead you.",
    "I don't know anything about that topic.",
    "Sorry, that's outside of what I know.",
    "I have no answer for that.",
    "I'm not able to say.",
    "My knowledge doesn't cover that.",
    "I couldn't find that in what I know.",
    "I don't have the facts needed to answer.",
    "That's a question I can't answer.",
    "I'm drawing a blank on that one.",
    "I'm sorry, I simply don't know.",
    "I have not come across that information.",
    "I cannot answer that with any confidence.",
    "I'd rather admit I don't know than guess.",
    "That detail is unknown to me.",
)


def pick_refusal(key: str | int, seed: int = 0, refusals: tuple[str, ...] = REFUSALS) -> str:
    """Refusal for item `key` (e.g. the question or its index), stable across runs for a `seed`."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return refusals[int.from_bytes(digest[:8], "big") % len(refusals)]
