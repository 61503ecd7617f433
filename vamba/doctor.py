"""``vamba doctor``: what this machine has (versions, devices, kernel backends), printed as JSON."""
from __future__ import annotations

import importlib.metadata
import json
import platform

import torch

PACKAGES = ("torch", "transformers", "accelerate", "deepspeed", "mamba-ssm", "causal-conv1d", "flash-attn",
            "triton", "decord", "av", "hydra-core", "datasets", "wandb")


def environment(kernels: bool = False) -> dict:
    """Versions and devices; used by every benchmark JSON and run directory so results name their setup."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    info = {"python": platform.python_version(), "platform": platform.platform(), "versions": versions,
            "cuda": torch.version.cuda, "devices": []}
    if kernels:
        from vamba.ops import available

        info["kernels"] = available()
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        info["devices"].append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                                "capability": f"{props.major}.{props.minor}"})
    return info


def main(argv: list[str]) -> int:
    print(json.dumps(environment(kernels=True), indent=2))
    return 0
