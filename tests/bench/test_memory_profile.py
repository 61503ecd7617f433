"""The allocator-trace replay of the training-memory profile (vamba.bench.memory_profile), on a trace in torch's own
event format."""
from __future__ import annotations

from collections import Counter

from vamba.bench.memory_profile import peak_breakdown

MAMBA = [{"filename": "/x/vamba/models/mamba2.py", "line": 240, "name": "forward"}]
ENGINE: list[dict] = []  # allocations of the C++ autograd engine carry no Python frames
BWD_KERNEL = [{"filename": "/x/mamba_ssm/ops/triton/ssd_combined.py", "line": 900, "name": "backward"},
              {"filename": "/x/torch/autograd/function.py", "line": 300, "name": "apply"}]


def _alloc(addr: int, size: int, frames: list[dict]) -> dict:
    return {"action": "alloc", "addr": addr, "size": size, "frames": frames}


def _free(addr: int, size: int) -> dict:
    return {"action": "free_requested", "addr": addr, "size": size}


def test_live_blocks_at_the_peak_grouped_by_phase_and_site() -> None:
    events = [_alloc(1, 1000, MAMBA), _alloc(2, 512, MAMBA), _free(2, 512),
              _free(99, 4096),  # allocated before the trace started: not counted
              _alloc(3, 2048, ENGINE), _alloc(4, 3072, BWD_KERNEL), _alloc(5, 2048, ENGINE),  # peak: 8168
              _free(4, 3072), _free(1, 1000), _alloc(6, 4000, MAMBA)]  # 8096 < peak
    out = peak_breakdown(events, grad_sizes=Counter({2048: 1}))
    assert out["peak_above_start_bytes"] == 1000 + 2048 + 3072 + 2048 and out["peak_event"] == 6
    groups = {(g["phase"], g["site"]): (g["bytes"], g["blocks"]) for g in out["groups"]}
    assert groups == {
        ("forward", "vamba/models/mamba2.py:240 forward"): (1000, 1),
        ("backward", "mamba_ssm/ops/triton/ssd_combined.py:900 backward"): (3072, 1),
        ("backward", "parameter gradients"): (2048, 1),  # one gradient of that size; the other is not one
        ("backward", "(no Python frame of ours)"): (2048, 1)}
    assert out["other_bytes"] == 0
