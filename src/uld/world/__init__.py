"""The synthetic world of the built-in miniature benchmark: a TOFU look-alike generated from a seed.

`config` (sizes and seed), `vocab` (word lists and QA templates), `entities` (authors, countries,
general knowledge), `generate` (the splits in memory, and `write_world` to a TOFU-layout directory).
"""

from uld.world.config import WorldConfig, forget_author_counts
from uld.world.generate import World, generate_world, write_world

__all__ = ["World", "WorldConfig", "forget_author_counts", "generate_world", "write_world"]
