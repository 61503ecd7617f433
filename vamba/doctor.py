"""``vamba doctor``: what this machine has (versions, devices, kernel backends), printed as JSON."""
from __future__ import annotations

import json

from vamba.ops import available
from vamba.utils.provenance import environment


def report() -> dict:
    """``environment()`` plus, per optional kernel package, "ok" or why its op runs the PyTorch reference."""
    return {**environment(), "kernels": available()}


def main(argv: list[str]) -> int:
    print(json.dumps(report(), indent=2))
    return 0
