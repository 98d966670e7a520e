"""`uld generate` (not yet implemented)."""
