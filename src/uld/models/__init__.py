"""Models: loading targets, building the assistant, the logit-difference model."""
