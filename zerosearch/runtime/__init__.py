"""What a run needs around the model: process groups and sharding, checkpoints, crash-safe JSONL, metrics."""
