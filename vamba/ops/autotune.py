"""The Triton autotuning choices of mamba-ssm's kernels, kept on disk across launches (docs/kernels.md, "Autotuning").

Triton 3.6 stores an autotuned kernel's choice in its cache (``TRITON_CACHE_AUTOTUNING=1``, set by
``vamba.ops._backend``) except for a kernel whose configs carry a ``pre_hook``: mamba-ssm 2.3.2 zeroes an output
buffer in one for eight backward kernels. So every launch benchmarked those again: 34.2 s of each start of a 7B
stage-1 run on an H100 (docs/results/train_launched_h100.md, sixth call).

This module keeps the choices itself. ``save`` writes what every autotuner of the listed modules chose in this
process (its ``cache``: the tuning key, e.g. ``(chunk_size, headdim, dstate, ..., 'torch.bfloat16')``, to the
chosen ``Config``) into one JSON file per GPU model and Triton / mamba-ssm version (``choices_path``). ``restore``
puts them back into the autotuners before their first call, which then run the chosen config without
benchmarking. A choice decides speed only: every config of a kernel computes the same result. An entry whose config
is no longer among the kernel's configs (another mamba-ssm) is ignored and counted.
"""
from __future__ import annotations

import atexit
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from vamba.utils.io import atomic_write_json
from vamba.utils.logging import get_logger

_log = get_logger(__name__)

PREFIXES = ("mamba_ssm.ops.triton.",)  # the modules whose autotuners are kept
FORMAT = 1
# Choices measured on the project's GPUs, shipped with the package under the same file names: a fresh machine with
# that GPU and those versions skips the tuning too (docs/kernels.md). The user's own file wins where both hold a key.
SHIPPED = Path(__file__).with_name("autotune_choices")


def autotuners(prefixes: tuple[str, ...] = PREFIXES) -> dict[str, Any]:
    """``{"module.kernel": Autotuner}`` for the imported modules whose names start with one of ``prefixes``."""
    from triton.runtime.autotuner import Autotuner

    found = {}
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(prefixes):
            continue
        for attr, value in vars(module).items():
            if isinstance(value, Autotuner):
                found[f"{name}.{attr}"] = value
    return found


def choices_path(device: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The file for ``device`` (a GPU's name) and the installed Triton and mamba-ssm, in ``cache_dir`` (default:
    Triton's cache, ``TRITON_CACHE_DIR`` or ``~/.triton/cache``: shared by a cluster's nodes where that is)."""
    import triton

    try:
        from importlib.metadata import version

        mamba = version("mamba-ssm")
    except Exception:  # not installed as a distribution (a source tree on the path)
        mamba = "unknown"
    folder = Path(cache_dir or os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache")
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{device}-triton{triton.__version__}-mamba{mamba}").strip("-")
    return folder / f"vamba-autotune-{slug}.json"


def _key(key: tuple) -> list:
    return [v if isinstance(v, (bool, int, float, str)) or v is None else str(v) for v in key]


def save(path: str | os.PathLike, prefixes: tuple[str, ...] = PREFIXES) -> int:
    """Add this process's choices to ``path`` (atomic; entries of other kernels and keys kept). Returns how many
    choices this process had."""
    path = Path(path)
    kernels: dict[str, list[dict]] = {}
    for name, tuner in autotuners(prefixes).items():
        if tuner.cache:
            kernels[name] = [{"key": _key(key), "config": str(config)} for key, config in tuner.cache.items()]
    if not kernels:
        return 0
    try:
        stored = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, json.JSONDecodeError):  # a damaged file is replaced, never trusted
        stored = {}
    merged = stored.get("kernels", {}) if stored.get("format") == FORMAT else {}
    for name, entries in kernels.items():
        by_key = {json.dumps(e["key"]): e for e in merged.get(name, [])}
        by_key.update({json.dumps(e["key"]): e for e in entries})
        merged[name] = list(by_key.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"format": FORMAT, "kernels": merged})
    return sum(len(e) for e in kernels.values())


def restore(path: str | os.PathLike, prefixes: tuple[str, ...] = PREFIXES) -> dict[str, int]:
    """Put the choices in ``path`` into the autotuners (a key already chosen in this process is left alone).
    Returns ``{"restored": n, "stale": n}``: stale entries name a config the kernel no longer has, or a kernel not
    imported here."""
    path = Path(path)
    counts = {"restored": 0, "stale": 0}
    try:
        stored = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, json.JSONDecodeError) as e:
        _log.warning("%s is not readable (%s): the Mamba-2 kernels are tuned again", path, e)
        return counts
    if stored.get("format") != FORMAT:
        return counts
    tuners = autotuners(prefixes)
    for name, entries in stored.get("kernels", {}).items():
        tuner = tuners.get(name)
        configs = {str(c): c for c in tuner.configs} if tuner is not None else {}
        for entry in entries:
            config = configs.get(entry["config"])
            if config is None:
                counts["stale"] += 1
                continue
            key = tuple(entry["key"])
            if key not in tuner.cache:
                tuner.cache[key] = config
                counts["restored"] += 1
    return counts


_remembered: set[Path] = set()


def remember(device: str, prefixes: tuple[str, ...] = PREFIXES, shipped: Path = SHIPPED) -> None:
    """Restore the choices for ``device`` now (this machine's file, then the shipped one for keys still untuned) and
    save this process's at exit to this machine's file (once per file and process)."""
    path = choices_path(device)
    sources = (path, shipped / path.name)
    if path in _remembered:
        for source in sources:  # kernels of a module imported since
            restore(source, prefixes)
        return
    _remembered.add(path)
    for source in sources:
        counts = restore(source, prefixes)
        if counts["restored"] or counts["stale"]:
            _log.info("Triton autotuning: %d choices of the Mamba-2 kernels restored from %s (%d stale)",
                      counts["restored"], source, counts["stale"])

    def _save() -> None:
        try:
            save(path, prefixes)
        except OSError as e:  # a read-only cache: the next launch tunes again, nothing else is lost
            _log.warning("Triton autotuning choices not saved to %s: %s", path, e)

    atexit.register(_save)
