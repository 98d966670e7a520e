"""`uld eval` (not yet implemented)."""
