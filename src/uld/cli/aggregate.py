"""`uld aggregate` (not yet implemented)."""
