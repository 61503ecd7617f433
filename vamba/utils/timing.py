"""The one timing helper of the benchmarks (``vamba.bench``): time a step, with its peak memory.

``measure`` times a callable with CUDA events on a GPU (no host synchronisation inside the timed region) or
``perf_counter`` on the CPU, treats the first run(s) as warm-up, reports the median of the timed runs and the
peak of allocated memory, and records an out-of-memory or any other failure as the result instead of raising
(one failing point of a sweep must not cost the others). Benchmarks print and write these figures as JSON;
tests never assert on them (docs/design.md, "Honest measurement").
"""
from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import torch

GIB = 2**30


class Clock:
    """CUDA events on a GPU (no host sync inside the measured region), ``perf_counter`` on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def ms(self, start, end) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def is_oom(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's refusal (a RuntimeError)."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


def free(device: torch.device) -> None:
    """Return freed blocks to the device between points (on the CPU there is nothing to gain: skip the slow gc)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def measure(step: Callable[[], object], device: torch.device, *, reps: int = 3, warmup: int = 1,
            repeat_under_ms: float = float("inf"), warm_under_ms: float = float("inf"),
            part: Callable[[], float] | None = None) -> dict[str, Any]:
    """Time ``step`` on ``device`` and record its peak memory.

    The first ``warmup`` runs pay for whatever is new at this size (Triton autotuning and compilation keyed on
    shapes, allocator growth, cuBLAS heuristics) and are not in the median (the upper middle run for an even
    count); ``first_ms`` keeps the first run's time. Then ``reps`` timed runs when the first took under
    ``repeat_under_ms``, else one. A first run of ``warm_under_ms`` or more is timed alone (the one-off costs are
    then a small share of it).
    ``part``: returns the milliseconds spent in a part of the step since its last call (e.g. forward hooks on a
    vision tower); the median run's share is ``part_ms``.

    Returns ``{"status": "ok", "total_ms", "runs", "first_ms", "all_ms"[, "part_ms"]}`` plus, on CUDA,
    ``peak_gib`` (peak allocated), ``peak_above_start_gib`` (above what was allocated before: weights, inputs),
    ``start_gib`` and ``reserved_gib``; or ``{"status": "oom"}`` / ``{"status": "error", "error": ...}``.
    """
    free(device)
    clock = Clock(device)
    cuda = device.type == "cuda"
    before = 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    runs: list[tuple[float, float]] = []
    if part is not None:
        part()  # forget what earlier, untimed calls left
    try:
        while True:
            start = clock.mark()
            step()
            end = clock.mark()
            clock.sync()
            runs.append((clock.ms(start, end), part() if part is not None else 0.0))
            first = runs[0][0]
            wanted = 1 if first >= warm_under_ms else warmup + (reps if first < repeat_under_ms else 1)
            if len(runs) >= wanted:
                break
    except Exception as e:  # noqa: BLE001 - a point that fails is recorded; the benchmark goes on
        if part is not None:
            part()
        free(device)
        return {"status": "oom"} if is_oom(e) else {"status": "error", "error": f"{type(e).__name__}: {e}"[:500]}
    timed = runs[warmup:] or runs
    total, part_ms = sorted(timed)[len(timed) // 2]
    out: dict[str, Any] = {"status": "ok", "total_ms": round(total, 3), "runs": len(timed),
                           "first_ms": round(runs[0][0], 3), "all_ms": [round(t, 3) for t, _ in timed]}
    if part is not None:
        out["part_ms"] = round(part_ms, 3)
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        out.update(peak_gib=round(peak / GIB, 3), peak_above_start_gib=round((peak - before) / GIB, 3),
                   start_gib=round(before / GIB, 3), reserved_gib=round(torch.cuda.max_memory_reserved() / GIB, 3))
    free(device)
    return out


def matmul_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """The device's measured dense matmul rate (TFLOP/s) in ``dtype``: the denominator of model FLOPs utilisation.
    An ``n x n x n`` ``torch.matmul`` (n = 8192 on CUDA, 512 on the CPU), median of 20 (CPU: 5) runs.
    ``torch.float8_e4m3fn``: ``torch._scaled_mm`` with row-wise scales and a bfloat16 output (vamba.ops.fp8's GEMM)."""
    n = 8192 if device.type == "cuda" else 512
    if dtype == torch.float8_e4m3fn:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype).t()  # column-major, as the FP8 GEMM takes it
        sa, sb = torch.ones(n, 1, device=device), torch.ones(1, n, device=device)
        run = lambda: torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)  # noqa: E731
    else:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        run = lambda: a @ b  # noqa: E731
    result = measure(run, device, reps=20 if device.type == "cuda" else 5, warmup=3)
    if result["status"] != "ok":
        raise RuntimeError(f"the {n}^3 matmul that measures the device's rate failed: {result}")
    return 2 * n**3 / (result["total_ms"] / 1e3) / 1e12
