"""A resumed run trains with the settings of the run it continues (docs/training.md, "Stopping and resuming").

A resume restores the model, the optimizer (its learning rate, weight decay and betas among its state), the
scheduler and the data order from the checkpoint, and the command's own settings build everything else: a changed
``optim.lr`` was ignored while ``config.yaml`` recorded it, a changed batch size or frame count was applied from the
next step on. Either way the run no longer was the run its ``config.yaml`` described. ``check_resume_settings``
compares the command's resolved config with the ``config.yaml`` of the run that wrote the checkpoint and refuses any
difference outside ``MAY_CHANGE``, naming each key with both values.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vamba.training.config import ConfigError, TrainConfig, flatten

# What a resume may change: where and how far the run goes (train further: max_steps or epochs), how it is logged,
# debugged and checkpointed, and how it runs (paths tested equal to their references, memory savers, loader workers,
# the device, the per-device batch under the same global batch, the parallel layout), none of which changes what
# the next steps compute beyond rounding.
MAY_CHANGE = ("output_dir", "resume", "device", "optim.max_steps", "optim.epochs", "optim.per_device_batch_size",
              "logging.", "debug.stop_after_steps", "debug.detect_anomaly", "debug.stall_dump_s", "debug.profile_steps",
              "model.attention_backend", "model.vision_attention", "model.vision_compile",
              "model.gradient_checkpointing", "model.offload_checkpoints", "data.num_workers", "data.cache_in_memory",
              "parallel.")


class ResumeSettingsError(ConfigError):
    """The command would resume a run with other settings than the run was trained with."""


def _may_change(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in MAY_CHANGE)


def changed_settings(cfg: TrainConfig, recorded: Path) -> dict[str, tuple[Any, Any]]:
    """key -> (recorded value, this command's) for every setting outside ``MAY_CHANGE`` that differs from the run's
    ``config.yaml`` at ``recorded``. Keys the file does not hold (written before they existed) are not compared."""
    old = flatten(OmegaConf.to_container(OmegaConf.load(recorded), resolve=True))
    new = flatten(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))
    return {k: (old[k], v) for k, v in new.items() if k in old and old[k] != v and not _may_change(k)}


def check_resume_settings(cfg: TrainConfig, checkpoint: str | Path) -> None:
    """Refuse to resume ``checkpoint`` with settings other than its run's (module docstring); a checkpoint without
    its run's ``config.yaml`` beside it (copied alone) is not checked."""
    recorded = Path(checkpoint).parent / "config.yaml"
    if not recorded.is_file():
        return
    changed = changed_settings(cfg, recorded)
    if changed:
        lines = "; ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in changed.items())
        raise ResumeSettingsError(
            f"{checkpoint} was trained with other settings than this command's ({lines}). A resume continues the run "
            f"as it was configured (it may change only {', '.join(MAY_CHANGE)}): give the same values, or start a new "
            "run with resume=replace or another output_dir")
