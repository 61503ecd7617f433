"""``vamba doctor``: what this machine has (versions, devices, kernel backends) as JSON, then a verdict line
(ready for CPU tests / GPU training / what is missing) and the command to run next."""
from __future__ import annotations

import json
from dataclasses import dataclass

from vamba.ops import available
from vamba.utils.cli_args import parse_args
from vamba.utils.provenance import environment

# What every command needs on any machine (the package's dependencies), and what GPU training adds.
CORE = ("torch", "transformers", "hydra-core", "accelerate")
DECODERS = ("decord", "av")  # one of them reads videos
GPU_TRAINING = ("deepspeed",)


@dataclass
class DoctorArgs:
    json_only: bool = False  # print the JSON report alone (no verdict lines), for scripts


def report() -> dict:
    """``environment()`` plus, per optional kernel package, "ok" or why its op runs the PyTorch reference."""
    return {**environment(), "kernels": available()}


def verdict(env: dict) -> tuple[str, str]:
    """(what this machine is ready for, or what it misses; the next command to run) from a ``report()``."""
    versions = env.get("versions", {})
    missing = [name for name in CORE if not versions.get(name)]
    if not any(versions.get(name) for name in DECODERS):
        missing.append("decord or av (video decoding)")
    if missing:
        return f"NOT READY: missing {', '.join(missing)}", 'pip install -e ".[dev]"'
    if not env.get("devices"):
        return ("ready for CPU tests and the CPU demo (no CUDA GPU: GPU training and the fast kernels need one)",
                "vamba train experiment=demo")
    gpu_missing = [name for name in GPU_TRAINING if not versions.get(name)]
    slow = [name for name, state in env.get("kernels", {}).items() if state != "ok"]
    if gpu_missing:
        return f"GPU found, but GPU training misses {', '.join(gpu_missing)}", 'pip install -e ".[train]"'
    if slow:
        return (f"ready for GPU training on the PyTorch reference kernels (slow: {', '.join(slow)} unavailable)",
                'pip install -e ".[kernels]"')
    return "ready for GPU training (fast kernels available)", "pytest -q -m gpu tests/gpu"


def main(argv: list[str]) -> int:
    args = parse_args(DoctorArgs, argv, prog="vamba doctor", doc=__doc__ or "")
    env = report()
    print(json.dumps(env, indent=2))
    if not args.json_only:
        line, step = verdict(env)
        print(f"verdict: {line}")
        print(f"next: {step}")
    return 0
