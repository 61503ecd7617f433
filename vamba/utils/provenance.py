"""What a result was made with: the code's commit, package versions and devices.

Every benchmark JSON (``vamba.bench``) and every run directory (``run_info.json``) records these so that a
number names its setup (docs/design.md, "Honest measurement").
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch

PACKAGES = ("torch", "transformers", "accelerate", "deepspeed", "mamba-ssm", "causal-conv1d", "flash-attn",
            "triton", "decord", "av", "hydra-core", "datasets", "wandb")


def code_commit() -> str | None:
    """The checkout's commit, with ``+dirty`` when files differ from it; ``VAMBA_CODE_COMMIT`` when set (a copy
    of the code without ``.git``, e.g. on a lent GPU machine); None outside a git checkout."""
    if os.environ.get("VAMBA_CODE_COMMIT"):
        return os.environ["VAMBA_CODE_COMMIT"]
    root = str(Path(__file__).resolve().parents[2])
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


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
