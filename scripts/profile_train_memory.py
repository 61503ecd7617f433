"""Where a VAMBA training step's GPU memory goes (vamba/inference/memory_profile.py): one forward+backward per
frame count and mode, the allocator's trace replayed, the live blocks at the peak grouped by allocating code.
Needs a CUDA GPU. Writes ``train_memory_<tag>.json``.

    python scripts/profile_train_memory.py --frames 64 256 --out-dir docs/results --tag h200
"""
from __future__ import annotations

import argparse
import datetime
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from vamba.doctor import environment  # noqa: E402
from vamba.inference.efficiency import (  # noqa: E402
    GIB, Setup, build, code_commit, frame_grid, free, set_trainable, vamba_config, vamba_steps)
from vamba.inference.memory_profile import peak_breakdown  # noqa: E402
from vamba.utils.io import atomic_write_json  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="7b", choices=["7b", "2b"])
    p.add_argument("--frames", type=int, nargs="+", default=[64, 256])
    p.add_argument("--modes", nargs="+", default=["train", "train_offload"], choices=["train", "train_offload"])
    p.add_argument("--out-dir", default="docs/results")
    p.add_argument("--tag", default="gpu")
    args = p.parse_args()
    from vamba.models import VambaForConditionalGeneration

    device, dtype = torch.device("cuda"), torch.bfloat16
    setup = Setup(device, dtype, frame_grid(640, 360), 32, 128, 128)
    model = build(VambaForConditionalGeneration, vamba_config(args.scale, "fast"), device, dtype)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    set_trainable(model, "vamba", "train")
    grads = Counter(-(-p.numel() * p.element_size() // 512) * 512 for p in model.parameters() if p.requires_grad)
    steps = vamba_steps(model, setup)
    out = {"what": __doc__.splitlines()[0], "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
           "device": torch.cuda.get_device_name(), "environment": environment(), "code_commit": code_commit(),
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
