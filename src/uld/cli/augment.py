"""`uld augment` (not yet implemented)."""
