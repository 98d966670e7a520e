"""`uld unlearn` (not yet implemented)."""
