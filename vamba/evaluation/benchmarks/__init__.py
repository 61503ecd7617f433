"""One module per benchmark; ``get_benchmark(name)`` returns its ``Benchmark`` description."""
from __future__ import annotations

import importlib

from vamba.evaluation.benchmarks.base import Benchmark, BenchmarkDataError, OfficialSet, ProtocolSpec, Question

NAMES = ("lvbench", "videomme", "mlvu", "longvideobench", "mvbench", "nextqa", "hourvideo")


def get_benchmark(name: str) -> Benchmark:
    if name not in NAMES:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(NAMES)}")
    return importlib.import_module(f"vamba.evaluation.benchmarks.{name}").BENCHMARK


__all__ = ["NAMES", "Benchmark", "BenchmarkDataError", "OfficialSet", "ProtocolSpec", "Question", "get_benchmark"]
