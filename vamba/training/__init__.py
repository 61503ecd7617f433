"""Two-stage training: trainer, distillation, parameter groups, checkpoints."""
