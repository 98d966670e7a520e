"""Performance benchmarks (`uld bench`): ULD against the alternatives, as ratios measured in one run."""
