"""The training loop, its optimisers and schedule, checkpoints and the reporting callback protocol."""
