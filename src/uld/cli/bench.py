"""`uld bench` (not yet implemented)."""
