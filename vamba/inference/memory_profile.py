"""Where a training step's GPU memory goes (``scripts/profile_train_memory.py``).

One VAMBA forward+backward at the efficiency benchmark's setup (random weights, ``vamba.inference.efficiency``),
with the CUDA caching allocator recording every allocation and its Python stack. Replaying that trace gives
the peak of allocated memory above what was allocated before the step (weights, inputs) and the blocks alive
at that moment, grouped by the code that allocated them: the innermost frame in this package, mamba-ssm,
causal-conv1d or transformers, and whether the allocation came from the forward or from inside
``backward()`` (recomputed checkpointed layers, kernels' backward passes, parameter gradients). Run at two
frame counts, the per-token cost of each group is the difference over the added tokens.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

SITES = ("/vamba/", "/mamba_ssm/", "/causal_conv1d/", "/transformers/")


def _site(frames: list[dict]) -> str:
    for f in frames:  # innermost first
        name = f.get("filename", "")
        for marker in SITES:
            if marker in name:
                return f"{name[name.index(marker) + 1:]}:{f.get('line')} {f.get('name')}"
    return "(no Python frame of ours)"


def _phase(frames: list[dict]) -> str:
    """Allocations in backward run on the autograd engine's thread: no Python frames at all (C++ backward
    formulas, gradient accumulation), or a custom Function's ``backward``, or checkpoint's ``recompute_fn``."""
    if not frames or any(f.get("name") in ("backward", "recompute_fn") for f in frames):
        return "backward"
    return "forward"


def peak_breakdown(events: list[dict[str, Any]], grad_sizes: Counter | None = None, top: int = 20) -> dict[str, Any]:
    """Replay allocator ``events`` (``torch.cuda.memory._snapshot()["device_traces"][i]``): bytes allocated above
    the start at the peak, and the live blocks then, grouped by (phase, site), largest first.

    ``grad_sizes``: the byte sizes of the trainable parameters' gradients; an allocation without Python frames
    (the autograd engine) of such a size is counted as ``parameter gradients`` (each size as often as it occurs)."""
    live: dict[int, tuple[int, str]] = {}
    total = peak = 0
    peak_at = -1

    def replay(stop: int | None) -> None:
        nonlocal total, peak, peak_at
        live.clear()
        total = 0
        for i, e in enumerate(events):
            if stop is not None and i > stop:
                break
            action = e.get("action")
            if action == "alloc":
                live[e["addr"]] = (e["size"], i)
                total += e["size"]
                if stop is None and total > peak:
                    peak, peak_at = total, i
            elif action in ("free_requested", "free_completed") and e["addr"] in live:
                total -= live.pop(e["addr"])[0]

    replay(None)
    replay(peak_at)
    groups: Counter = Counter()
    counts: Counter = Counter()
    unmatched = Counter(grad_sizes or {})
    for size, i in live.values():
        frames = events[i].get("frames", [])
        phase, site = _phase(frames), _site(frames)
        if not frames and unmatched[size] > 0:
            unmatched[size] -= 1
            phase, site = "backward", "parameter gradients"
        groups[(phase, site)] += size
        counts[(phase, site)] += 1
    return {"peak_above_start_bytes": peak, "peak_event": peak_at, "events": len(events),
            "groups": [{"phase": p, "site": s, "bytes": b, "blocks": counts[(p, s)]}
                       for (p, s), b in groups.most_common(top)],
            "other_bytes": sum(b for k, b in groups.items() if k not in dict(groups.most_common(top)))}
