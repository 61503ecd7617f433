"""Two-stage training: typed configs, builders, the trainer (loss, distillation, parameter groups, exact resume),
checkpoints, the teacher cache (docs/training.md)."""
