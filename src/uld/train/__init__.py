"""Training: run configuration, policies, the one training loop and the `uld unlearn` job."""
