"""End-to-end studies: the cached miniature pipeline (`pipeline`) and the `uld demo` study (`demo`)."""
