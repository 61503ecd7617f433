"""Training checkpoints that are complete or absent, and what a resume reads from them (docs/training.md).

The HF Trainer writes ``checkpoint-<step>/`` file by file, in place: a run killed during a save left a directory
that ``resume=auto`` then picked and failed on, at every rerun. ``VambaTrainer`` has the Trainer write into
``<output_dir>/.staging/checkpoint-<step>/`` instead and, once every rank has written its files, moves it to
``<output_dir>/checkpoint-<step>/`` in one rename (``publish``). A killed save leaves only ``.staging/``, which no
resume reads and the next run removes.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from vamba.training.config import ConfigError
from vamba.utils.io import atomic_write_text, read_jsonl, safetensors_header
from vamba.utils.logging import get_logger

logger = get_logger(__name__)

STAGING = ".staging"
TRAINER_STATE = "trainer_state.json"  # written last by the Trainer: a checkpoint without it is incomplete
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class IncompleteCheckpointError(ConfigError):
    """A checkpoint whose files do not parse (cut short, edited, or not a Trainer checkpoint)."""


def incomplete_reason(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from, or None when its files parse: a Trainer state that is a JSON object
    with an integer ``global_step`` (the Trainer writes it last), and safetensors files whose headers are whole and
    well formed (header only: no tensor is read)."""
    state = checkpoint / TRAINER_STATE
    if not state.is_file():
        return f"no {TRAINER_STATE}"
    try:
        step = json.loads(state.read_text(encoding="utf-8")).get("global_step")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        return f"{state} is not a JSON object ({e}; cut short?)"
    if not isinstance(step, int) or isinstance(step, bool):
        return f"{state} has no integer global_step"
    for weights in sorted(checkpoint.glob("*.safetensors")):
        try:
            safetensors_header(weights)
        except (OSError, ValueError) as e:
            return str(e)
    return None


def checkpoint_step(checkpoint: str | os.PathLike) -> int:
    """The optimizer step a checkpoint was saved at (its Trainer state's ``global_step``). Raises
    ``IncompleteCheckpointError`` saying what is wrong when its files do not parse."""
    reason = incomplete_reason(Path(checkpoint))
    if reason is not None:
        raise IncompleteCheckpointError(f"cannot resume from {checkpoint}: {reason}")
    return int(json.loads((Path(checkpoint) / TRAINER_STATE).read_text())["global_step"])


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete ``checkpoint-<step>`` of ``output_dir`` with the highest step, or None. Directories whose files
    do not parse (no or a truncated Trainer state, a cut weights file: written before saves were staged, damaged or
    copied by hand) are skipped with a warning naming them and what is wrong: the previous checkpoint is used."""
    out = Path(output_dir)
    if not out.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))),
                   reverse=True)
    for _, path in found:
        reason = incomplete_reason(path)
        if reason is None:
            return path
        logger.warning("skipping incomplete checkpoint %s (%s): delete it or resume=<another checkpoint>",
                       path, reason)
    return None


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` and the folders holding them, so that the rename that publishes ``root``
    cannot reach the disk before its contents (a power loss must not leave a complete-looking checkpoint)."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(staged: Path, final: Path) -> None:
    """Move the finished checkpoint ``staged`` to ``final`` in one rename (an older ``final``, from a run resumed
    before this step, is replaced). Call once, on the saving process, after every rank has written."""
    _fsync_tree(staged)
    old = None
    if final.exists():
        old = staged.parent / f"replaced-{final.name}"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    staged.rename(final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if old is not None:
        shutil.rmtree(old)
    if not any(staged.parent.iterdir()):
        staged.parent.rmdir()


def clean_staging(output_dir: str | os.PathLike) -> None:
    """Remove what a killed save left in ``<output_dir>/.staging``."""
    staging = Path(output_dir) / STAGING
    if staging.exists():
        logger.info("removing %s (left by an interrupted checkpoint save)", staging)
        shutil.rmtree(staging)


def truncate_log(path: str | os.PathLike, step: int) -> int:
    """Drop the records of ``log.jsonl`` logged after ``step`` (a resume from there logs them again), rewriting
    the file atomically. Returns how many were dropped."""
    path = Path(path)
    if not path.exists():
        return 0
    records = read_jsonl(path)  # (without a line torn by the kill)
    kept = [r for r in records if r.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return len(records) - len(kept)
