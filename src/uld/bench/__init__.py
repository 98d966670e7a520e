"""The built-in miniature benchmark: a synthetic TOFU-style world generated from a seed."""

from uld.bench.world import World, WorldConfig, forget_author_counts, generate_world, write_world

__all__ = ["World", "WorldConfig", "forget_author_counts", "generate_world", "write_world"]
