"""Training: the state, the data-parallel step, the loop, losses, mixed precision, checkpoints."""
