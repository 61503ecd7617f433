"""Timing and memory helpers for the GPU benchmark scripts (CUDA events, medians, measured ceilings)."""
from __future__ import annotations

import statistics
from collections.abc import Callable

import torch


def median_ms(fn: Callable[[], None], warmup: int, reps: int) -> float:
    """Median wall time of ``fn`` in milliseconds, timed with CUDA events after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_gib(fn: Callable[[], None]) -> float:
    """Peak memory allocated while fn runs, above what was allocated before (inputs, weights)."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def ceilings() -> dict:
    """This device's measured bf16 matmul rate and copy bandwidth: the denominators of achieved fractions."""
    n = 8192
    a, b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16), torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    mm = median_ms(lambda: torch.matmul(a, b), 3, 20)
    src = torch.randn(2**29, device="cuda", dtype=torch.float32)  # 2 GiB
    dst = torch.empty_like(src)
    cp = median_ms(lambda: dst.copy_(src), 3, 20)
    return {"bf16_matmul_tflops": 2 * n**3 / mm / 1e9, "copy_gbps": 2 * src.numel() * 4 / cp / 1e6,
            "matmul": f"bf16 {n}x{n}x{n} torch.matmul", "copy": "fp32 2 GiB device-to-device, read + write bytes"}
