"""Sizes and seed of a synthetic world (`WorldConfig`), and how many authors each forget set takes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from uld.errors import UldError
from uld.world import vocab as V

FORGET_PERCENTS = ("01", "05", "10")
KINDS = tuple(V.TEMPLATES)
Record = dict[str, Any]


@dataclass(frozen=True)
class WorldConfig:
    """Sizes and seed of a synthetic world; the defaults train in minutes on a 2-core CPU."""

    seed: int = 0
    """Seed of every random choice; the same config writes the same bytes."""
    num_authors: int = 60
    """Fictitious authors in `full` (TOFU: 200). forgetXX is the last ceil(XX% of them), >= 1."""
    qa_per_author: int = 10
    """QA pairs per author (TOFU: 20), each about a different fact; at most len(KINDS) = 14."""
    num_countries: int = 10
    """Invented countries of the general knowledge (>= 8: wrong answers need 7 other values)."""
    cities_per_country: int = 4
    """Cities per country, the capital included; authors are born and live in these cities."""
    num_classic_authors: int = 20
    """The world's famous writers, the stand-in for TOFU's real authors (3 QA each)."""
    num_arithmetic: int = 20
    """Number-word sums and differences among the world facts ("What is two plus three?")."""
    general_sentences: bool = True
    """Also put every general fact in `general` as a full sentence under its own prompt, so the
    base model learns sentence-shaped answers before it meets the authors."""

    def __post_init__(self) -> None:
        if self.num_authors < 2:
            raise UldError(f"num_authors must be at least 2 (one forget and one retain author), got {self.num_authors}")
        if not 1 <= self.qa_per_author <= len(KINDS):
            raise UldError(f"qa_per_author must be between 1 and {len(KINDS)}, got {self.qa_per_author}")
        if not 8 <= self.num_countries <= len(V.PLACE_ONSETS):
            raise UldError(f"num_countries must be between 8 and {len(V.PLACE_ONSETS)}, got {self.num_countries}")
        if not 1 <= self.cities_per_country <= len(V.CITY_CODAS):
            raise UldError(f"cities_per_country must be between 1 and {len(V.CITY_CODAS)}, got {self.cities_per_country}")
        if self.num_classic_authors < 4 or self.num_arithmetic < 0:
            raise UldError("num_classic_authors must be at least 4 and num_arithmetic at least 0")


def forget_author_counts(num_authors: int) -> dict[str, int]:
    """Authors in forget01/05/10: ceil(1/5/10 % of `num_authors`), at least 1 each.

    TOFU's 200 authors give 2/10/20; 60 give 1/3/6; below 10 authors every forget set has 1.
    The holdout sets have the same sizes.
    """
    return {p: max(1, math.ceil(num_authors * int(p) / 100 - 1e-9)) for p in FORGET_PERCENTS}

