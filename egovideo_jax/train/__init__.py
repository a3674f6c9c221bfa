"""Training: train setup and state, the step, loss, optimizer, checkpoints, the trainer loop,
metrics, memory and FLOPs estimates, and the end-of-run report."""
