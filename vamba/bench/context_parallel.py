"""Context parallelism on one GPU (docs/context_parallel.md; ``scripts/bench_context_parallel.py``): two ranks sharing
the GPU over gloo, per-rank memory and step time at 7B. Writes JSON. It only measures: the correctness checks of
the kernels path and of CP 2 against one process are tests (tests/gpu/test_context_parallel_gpu.py,
``bash scripts/gpu/tests.sh``).

    torchrun --nproc_per_node 2 scripts/bench_context_parallel.py measure --mode stage1 --frames 2048 --out OUT/cp_stage1.json
    python scripts/bench_context_parallel.py merge --out docs/results/context_parallel_h200.json OUT/cp_*.json

- ``measure`` (torchrun, 2 ranks on the GPU, gloo, each capped at 1/2 of its memory): the 7B model (random bf16
  weights, gradient checkpointing, frozen vision tower) at ``--frames`` 640x360 frames (299 tokens per 2 frames,
  as docs/results/efficiency_h200_cap80*.json) and 128 text tokens, one forward+backward per step: per-rank peak
  allocated memory and step time (``vamba.utils.timing.measure``: the first step warms, then ``--steps`` timed). The
  two ranks time-share one GPU: the step time bounds the overhead, it is not the speed of two GPUs. The exit
  status is non-zero when a rank ran out of memory or failed (recorded in its JSON).
- ``merge``: the parts' JSON files into one.
``--device cpu --scale tiny`` runs the same logic on the CPU (a check of the script, not a measurement).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import traceback
from pathlib import Path

import torch

from vamba.bench.build import build, frame_grid, vamba_config
from vamba.bench.steps import set_trainable
from vamba.data.vision import PATCH_DIM
from vamba.ops import available
from vamba.utils.io import atomic_write_json
from vamba.utils.provenance import header as provenance_header
from vamba.utils.timing import GIB, measure

GRID_640x360 = frame_grid(640, 360)  # patches per frame: 299 merged tokens per 2 frames


def header(what: str, device: torch.device) -> dict:
    out = {"what": what, **provenance_header(device)}
    out["environment"]["kernels"] = available()
    return out


# -- two ranks -----------------------------------------------------------------------------------------------
def _init_ranks(device_kind: str):
    import torch.distributed as dist

    from vamba.parallel.groups import init_context_parallel

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=300))
    if device_kind == "cuda":
        torch.cuda.set_device(0)  # both ranks on the one GPU
        torch.cuda.set_per_process_memory_fraction(1.0 / dist.get_world_size(), 0)
    return dist, init_context_parallel(dist.get_world_size())


def measure_steps(args) -> int:
    from vamba.utils.distributed import close_process_group

    dist, cp = _init_ranks(args.device)
    device = torch.device(args.device)
    result = header(f"context parallelism: {cp.size} ranks on one GPU, {args.mode} step at {args.frames} frames",
                    device)
    h, w = GRID_640x360 if args.scale != "tiny" else (4, 4)
    patches = args.frames // 2
    plan = [patches * r // cp.size for r in range(cp.size + 1)]  # equal shares of temporal patches
    t0, t1 = plan[cp.rank], plan[cp.rank + 1]
    result.update(mode=args.mode, frames=args.frames, world_size=cp.size, scale=args.scale, text_tokens=args.text,
                  frame_size="640x360", tokens_per_2_frames=(h // 2) * (w // 2),
                  video_tokens=patches * (h // 2) * (w // 2), local_temporal_patches=t1 - t0,
                  memory_cap_gib=(torch.cuda.get_device_properties(0).total_memory / cp.size / GIB
                                  if device.type == "cuda" else None))
    status = "ok"
    try:
        started = time.perf_counter()
        print(f"rank {cp.rank}: building the {args.scale} model ({args.mode}, {args.frames} frames, "
              f"temporal patches {t0}..{t1})", flush=True)
        model = build_model(args.scale, device)
        result["build_s"] = round(time.perf_counter() - started, 1)
        result["trainable_parameters"] = set_trainable(model, "vamba", args.mode)
        model.gradient_checkpointing_enable()
        model.train()
        model.set_context_parallel(cp)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(3, min(150000, model.config.text_config.vocab_size - 5), (1, args.text), generator=g)
        ids = ids.to(device)
        pixels = torch.randn((t1 - t0) * h * w, PATCH_DIM, generator=torch.Generator().manual_seed(1 + cp.rank))
        pixels = pixels.to(device=device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
        inputs = dict(input_ids=ids, labels=ids, pixel_values=pixels,
                      grid_thw=torch.tensor([[t1 - t0, h, w]], device=device),
                      visual_row=torch.zeros(1, dtype=torch.long, device=device),
                      visual_seq_idx=torch.zeros(1, dtype=torch.long, device=device),
                      visual_t_offset=torch.tensor([t0], device=device))

        def step() -> None:  # both ranks start and end each step together: the wall time of the slower one
            dist.barrier()
            model(**inputs).loss.backward()
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            dist.barrier()

        timed = measure(step, device, reps=args.steps, warmup=1)  # the first step warms (Triton compilation)
        if timed["status"] != "ok":
            status = timed["status"]
            result["error"] = timed.get("error", "out of memory")
        else:
            times = [timed["first_ms"] / 1e3] + [ms / 1e3 for ms in timed["all_ms"]]
            print(f"rank {cp.rank} steps: " + ", ".join(f"{t:.2f} s" for t in times), flush=True)
            result["step_s"] = [round(t, 3) for t in times]
            result["warm_step_s"] = round(min(times[1:]), 3)
            if device.type == "cuda":
                result.update({k: round(timed[k], 2) for k in ("start_gib", "peak_gib", "reserved_gib")})
    except torch.cuda.OutOfMemoryError as e:
        status = "oom"
        result["error"] = str(e).splitlines()[0]
    except Exception as e:  # noqa: BLE001 (recorded, then the exit code says it failed)
        status = "error"
        result["error"] = "".join(traceback.format_exception(e))[-3000:]
    if args.scale == "7b":  # the per-GPU memory model's prediction for this rank (docs/context_parallel.md)
        from vamba.parallel.memory import vamba_7b

        result["predicted_peak_gib"] = round(vamba_7b().peak_gib(result["video_tokens"], cp.size, args.mode), 2)
    result["status"] = status
    out = Path(args.out)
    atomic_write_json(out.with_name(f"{out.stem}.rank{cp.rank}{out.suffix}"), result)
    print(f"rank {cp.rank}: {status} {result.get('peak_gib')} GiB {result.get('warm_step_s')} s", flush=True)
    if status == "ok":
        close_process_group()
    return 0 if status == "ok" else 1


def build_model(scale: str, device: torch.device):
    from vamba.models import VambaForConditionalGeneration

    torch.manual_seed(0)  # the same weights on every rank
    if scale == "tiny":
        return VambaForConditionalGeneration(vamba_config("tiny", "auto")).to(device)
    # random weights made on the GPU in bf16, no float32 copy
    return build(VambaForConditionalGeneration, vamba_config(scale, "fast"), device, torch.bfloat16).train()


# -- merge ---------------------------------------------------------------------------------------------------
def merge(args) -> int:
    parts = {}
    for path in args.inputs:
        try:
            parts[Path(path).stem] = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            parts[Path(path).stem] = {"status": "missing", "error": str(e)}
    atomic_write_json(Path(args.out), {"what": "context parallelism on one GPU (scripts/bench_context_parallel.py)",
                                       "parts": parts})
    print(f"wrote {args.out}: {sorted(parts)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=["measure", "merge"])
    p.add_argument("inputs", nargs="*", help="merge: the JSON files")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--scale", default="7b", choices=["7b", "2b", "tiny"])
    p.add_argument("--mode", default="stage1", choices=["stage1", "train", "train_shared"])
    p.add_argument("--frames", type=int, default=2048)
    p.add_argument("--text", type=int, default=128)
    p.add_argument("--steps", type=int, default=1, help="timed steps after the warm-up step")
    args = p.parse_intermixed_args(argv)
    if args.part == "measure" and args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device (use --device cpu --scale tiny for a CPU check of the script)", file=sys.stderr)
        return 2
    return {"measure": measure_steps, "merge": merge}[args.part](args)


if __name__ == "__main__":
    sys.exit(main())
