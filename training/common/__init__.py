"""What every trainer of the training half shares: device, distributed context, run folder, resume helpers,
the generic training loop, checkpoint I/O. Model-specific code stays in each stage's own folder."""
