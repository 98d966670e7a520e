"""`uld demo` (not yet implemented)."""
