"""What a result was made with: the code's commit, the date, the device, package versions and devices.

``header`` is the one provenance header: every benchmark JSON (``vamba.bench``), every run directory's
``run_info.json``, the teacher cache's ``meta.json`` and the ablation summary start with it, so that a number names
its setup (docs/design.md, "Honest measurement"). The commit's key is ``code_commit`` everywhere (results written
before 2026-12-07 by training, the cache and the ablations called it ``git_commit``).
"""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("torch", "transformers", "accelerate", "deepspeed", "mamba-ssm", "causal-conv1d", "flash-attn",
            "triton", "decord", "av", "hydra-core", "datasets", "wandb")


CODE_PATHS = ("vamba/", "configs/", "scripts/", "pyproject.toml")


def code_commit() -> str | None:
    """The checkout's commit, with ``+dirty`` when tracked files differ from it or untracked ones lie under
    ``CODE_PATHS``; ``VAMBA_CODE_COMMIT`` when set (a copy
    of the code without ``.git``, e.g. on a lent GPU machine); None outside a git checkout."""
    if os.environ.get("VAMBA_CODE_COMMIT"):
        return os.environ["VAMBA_CODE_COMMIT"]
    root = str(Path(__file__).resolve().parents[2])
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", root, "status", "--porcelain"], capture_output=True, text=True,
                                timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    # An untracked file counts where code or configs are read from; elsewhere it is data or output (the tutorial
    # writes data/, ckpt/, runs/ into the checkout)
    dirty = [line for line in status if not line.startswith("??") or line[3:].startswith(CODE_PATHS)]
    return head.stdout.strip() + ("+dirty" if dirty else "")


def device_name(device: torch.device | str | None = None) -> str:
    """``"NVIDIA H100 80GB HBM3"`` for a CUDA device (None: the current one if CUDA is there), else ``"cpu"``."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def header(device: torch.device | str | None = None) -> dict[str, Any]:
    """The provenance header: ``code_commit``, ``date`` (UTC, ISO 8601, seconds), ``device`` (``device_name``: the
    device the result ran on) and ``environment`` (versions, CUDA and every visible device)."""
    return {"code_commit": code_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": device_name(device), "environment": environment()}


def environment() -> dict:
    """Python, platform, the versions of the packages that matter (None: not installed), CUDA and its devices."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    info = {"python": platform.python_version(), "platform": platform.platform(), "versions": versions,
            "cuda": torch.version.cuda, "devices": []}
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        info["devices"].append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                                "capability": f"{props.major}.{props.minor}"})
    return info
