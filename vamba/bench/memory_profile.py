"""Where a training step's GPU memory goes (``scripts/profile_train_memory.py``; needs a CUDA GPU).

One VAMBA forward+backward per frame count and mode at the efficiency benchmark's setup (random weights,
``vamba.bench.build`` / ``vamba.bench.steps``),
with the CUDA caching allocator recording every allocation and its Python stack. Replaying that trace gives
the peak of allocated memory above what was allocated before the step (weights, inputs) and the blocks alive
at that moment, grouped by the code that allocated them: the innermost frame in this package, mamba-ssm,
causal-conv1d or transformers, and whether the allocation came from the forward or from inside
``backward()`` (recomputed checkpointed layers, kernels' backward passes, parameter gradients). Run at two
frame counts, the per-token cost of each group is the difference over the added tokens. Writes
``train_memory_<tag>.json``:

    python scripts/profile_train_memory.py --frames 64 256 --out-dir docs/results --tag h200
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from vamba.bench.build import Setup, build, frame_grid, vamba_config
from vamba.bench.steps import set_trainable, vamba_steps
from vamba.utils.io import atomic_write_json
from vamba.utils.provenance import header
from vamba.utils.timing import GIB, free

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="7b", choices=["7b", "2b"])
    p.add_argument("--frames", type=int, nargs="+", default=[64, 256])
    p.add_argument("--modes", nargs="+", default=["train", "train_offload"], choices=["train", "train_offload"])
    p.add_argument("--out-dir", default="docs/results")
    p.add_argument("--tag", default="gpu")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from vamba.models import VambaForConditionalGeneration

    device, dtype = torch.device("cuda"), torch.bfloat16
    setup = Setup(device, dtype, frame_grid(640, 360), 32, 128, 128)
    model = build(VambaForConditionalGeneration, vamba_config(args.scale, "fast"), device, dtype)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    set_trainable(model, "vamba", "train")
    grads = Counter(-(-p.numel() * p.element_size() // 512) * 512 for p in model.parameters() if p.requires_grad)
    steps = vamba_steps(model, setup)
    out = {"what": __doc__.splitlines()[0], **header(device),
           "scale": args.scale, "trainable_parameters": sum(grads.values()) // 2, "runs": []}
    path = Path(args.out_dir) / f"train_memory_{args.tag}.json"
    steps["train"](min(args.frames))()  # compile/autotune the kernels outside the recorded steps
    for mode in args.modes:
        for n in args.frames:
            free(device)
            start = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step = steps[mode](n)
            torch.cuda.memory._record_memory_history(context="alloc", stacks="python", max_entries=2_000_000)
            step()
            torch.cuda.synchronize()
            trace = torch.cuda.memory._snapshot()["device_traces"][0]
            torch.cuda.memory._record_memory_history(enabled=None)
            run = {"mode": mode, "frames": n, "video_tokens": setup.video_tokens(n),
                   "allocated_at_start_gib": round(start / GIB, 3),
                   "peak_gib": round(torch.cuda.max_memory_allocated() / GIB, 3),
                   "host_bytes": getattr(step, "extra", {}).get("host_bytes", 0),
                   **peak_breakdown(trace, grads)}
            out["runs"].append(run)
            atomic_write_json(path, out)
            print(f"{mode} {n} frames: peak {run['peak_gib']} GiB, above start "
                  f"{run['peak_above_start_bytes'] / GIB:.2f} GiB (event {run['peak_event']} of {run['events']})")
            for g in run["groups"][:12]:
                print(f"  {g['bytes'] / GIB:8.3f} GiB {g['blocks']:5d}  {g['phase']:<8} {g['site']}")
            del step, trace
    return 0


if __name__ == "__main__":
    sys.exit(main())
