"""One run per run directory (docs/reliability.md): a lock held while a run writes there, no new run started over an
old one's files unless asked, and default directory names that two launches cannot share.

- ``claim(output_dir, resume)``, on the main process before anything of the run is written: takes
  ``<output_dir>/.lock`` (``vamba.utils.locks``; a second ``vamba train`` on the directory fails at once naming the
  holder, and the lock dies with its process, ``kill -9`` included), then refuses ``resume=never`` on a directory
  that holds a run (its ``final/`` and checkpoints of the same step would be overwritten, ``log.jsonl`` truncated and
  its later checkpoints kept, so that a later ``resume=auto`` continued the old run), and with ``resume=replace``
  moves that run's files into ``replaced-<time>/`` inside the directory (nothing is deleted).
- ``release(output_dir)`` at the run's end (a process that dies releases it anyway).
- ``abandon(output_dir)`` after a config error found once the run started (a trainable pattern that matches
  nothing): the directory goes, when this command made it and it holds only the run's start-up records.
- ``default_run_name()``: the ``${vamba_run_name:}`` of ``configs/train.yaml``'s default ``output_dir``.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from vamba.training.config import ConfigError
from vamba.utils.locks import FolderLock, FolderLocked
from vamba.utils.logging import get_logger

logger = get_logger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-\d+$")
# What a run writes at the top of its directory (docs/training.md, "Run directory"); ``.hydra/`` is Hydra's and is
# rewritten by every launch.
RUN_FILES = ("final", ".staging", "log.jsonl", "run_info.json", "config.yaml", "skips.jsonl", "tensorboard", "wandb",
             "console.log", "loss.png")  # the last two: vamba.training.observe
# Those whose presence means that a run trained here (a crash before the first step leaves only the others).
_TRAINED = ("final", ".staging", "log.jsonl")

_held: dict[Path, FolderLock] = {}  # run directories this process holds


class RunDirInUse(ConfigError):
    """The run directory is locked by a live run, or holds a run that ``resume`` does not continue."""


def previous_run(output_dir: Path) -> list[str]:
    """The entries of ``output_dir`` that show a run trained there (checkpoints, ``final/``, a non-empty log)."""
    if not output_dir.is_dir():
        return []
    found = []
    for entry in sorted(output_dir.iterdir()):
        if _CHECKPOINT.match(entry.name) or (entry.name in _TRAINED and
                                             (entry.is_dir() or entry.stat().st_size > 0)):
            found.append(entry.name)
    return found


def move_aside(output_dir: Path) -> Path:
    """Move every file a run wrote into ``output_dir/replaced-<time>/`` (one rename each, within the directory: no
    copy, nothing deleted) and return that folder. The user deletes it when the old run is no longer wanted."""
    aside = output_dir / time.strftime("replaced-%Y%m%d-%H%M%S")
    while aside.exists():
        aside = aside.with_name(aside.name + "_")
    aside.mkdir()
    for entry in sorted(output_dir.iterdir()):
        if _CHECKPOINT.match(entry.name) or entry.name in RUN_FILES:
            entry.rename(aside / entry.name)
    return aside


def claim(output_dir: str | os.PathLike, resume: str) -> None:
    """Lock ``output_dir`` for this process and make sure this run does not write over another (module docstring).
    Call on the main process only, before anything of the run is written. Holding it already (an earlier
    ``train`` of this process that raised) is fine."""
    out = Path(output_dir).resolve()
    if out not in _held:
        lock = FolderLock(out, purpose="used by a running `vamba train`")
        try:
            lock.acquire()
        except FolderLocked as e:
            raise RunDirInUse(f"{e}. Wait for it to end, or choose another output_dir") from None
        _held[out] = lock
    if resume == "auto" and (out / "final" / "config.json").is_file():  # a written model, not an empty folder
        from vamba.training.checkpoints import latest_checkpoint

        if latest_checkpoint(out) is None:  # e.g. logging.save_steps=0: nothing to continue, final/ to overwrite
            raise RunDirInUse(
                f"output_dir {out} holds a finished run (final/) and no checkpoint to continue from (a run with "
                f"logging.save_steps=0 writes none): resume=auto would train anew over it. Choose another output_dir, "
                f"or resume=replace to start anew there (the old run's files are moved into {out}/replaced-<time>/)")
    if resume in ("never", "replace"):
        found = previous_run(out)
        if found and resume == "never":
            shown = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
            raise RunDirInUse(
                f"output_dir {out} holds a run ({shown}): resume=never would mix the two runs. Choose another "
                f"output_dir, resume=auto to continue that run, or resume=replace to start anew there (the old run's "
                f"files are moved into {out}/replaced-<time>/)")
        if found:
            logger.info("resume=replace: the previous run's files moved to %s", move_aside(out))


def release(output_dir: str | os.PathLike) -> None:
    """Release the lock ``claim`` took (no-op when this process does not hold it)."""
    lock = _held.pop(Path(output_dir).resolve(), None)
    if lock is not None:
        lock.release()


# What a run that stopped on a config error before training has written (``abandon``), besides ``.lock``
_STARTED = ("config.yaml", "run_info.json", "console.log", "log.jsonl", ".hydra/config.yaml", ".hydra/hydra.yaml",
            ".hydra/overrides.yaml")


def abandon(output_dir: str | os.PathLike) -> bool:
    """Remove the run directory of a run that stopped on a config error before training, when this command made it:
    the caller knows the directory did not exist before the command, this process holds it (``claim``), and it holds
    nothing but ``_STARTED`` and the lock (an empty ``log.jsonl``). Anything else there keeps it all. Returns whether
    it was removed."""
    out = Path(output_dir).resolve()
    lock = _held.get(out)
    if lock is None or not out.is_dir():
        return False
    found = {str(p.relative_to(out)) for p in out.rglob("*")}
    log = out / "log.jsonl"
    if not found <= {*_STARTED, ".hydra", ".lock"} or (log.is_file() and log.stat().st_size > 0):
        return False
    for name in _STARTED:
        (out / name).unlink(missing_ok=True)
    if (out / ".hydra").is_dir():
        (out / ".hydra").rmdir()
    # the lock file goes while still held: a second launch meets no lock, or this one's until the close below
    (out / ".lock").unlink(missing_ok=True)
    out.rmdir()
    release(out)
    return True


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from /proc; None where there is no /proc."""
    try:
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, after the (command name)
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):
        return None


def default_run_name() -> str:
    """``<date>_<time>_<pid>``: the start of the launching process and its pid. Two launches in the same second
    (a timestamp alone collided) get different names, while every rank of one ``torchrun`` gets the same: they name
    their launcher, torchrun's agent (their parent), whose start time they all read, where each resolving the clock
    itself could cross a second. (Ranks on several nodes still need an explicit ``output_dir``.)"""
    torchrun = "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_RANK" in os.environ
    pid = os.getppid() if torchrun else os.getpid()
    started = _start_time(pid) or time.time()
    return time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(started)) + f"_{pid}"


def register_resolver() -> None:
    """Make ``${vamba_run_name:}`` available to the configs (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("vamba_run_name"):
        OmegaConf.register_new_resolver("vamba_run_name", default_run_name, use_cache=True)
