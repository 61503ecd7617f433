"""Vision tower benchmark (``scripts/bench_vision.py``): transformers' Qwen2-VL vision forward vs VAMBA's fast
forward (vamba.models.vision).

One tower at Qwen2-VL sizes (``7b``: depth 32, width 1280, 16 heads, MLP ratio 4, patch 14, merge 2; random
weights with non-zero biases, built on the device in ``--dtype``), one video of ``--frames`` frames at
``--frame-size`` (640x360 -> 644x364 -> 1196 patches per frame pair), no gradients. Modes, each the same weights:

- ``reference``: transformers' ``Qwen2VisionTransformerPretrainedModel`` as users run it (its class, SDPA);
- ``fast``: ``VambaVisionTower`` with ``--attention`` (``auto``: one batched SDPA call per layer for a video);
- ``compiled``: ``fast`` with ``torch.compile`` of the blocks (``vision_compile``; the first run compiles).

Per point (``vamba.utils.timing.measure``: CUDA events; one untimed warm-up run whose time is ``first_ms``, then
the median of ``--reps`` runs, one above 5 s): time, peak memory, forward FLOPs and TFLOP/s (matmul and
attention FLOPs counted analytically, ``vamba.models.flops.vision_flops``; the same count as
``torch.utils.flop_counter`` on the tower, tested), its fraction of the device's measured bf16 matmul rate, and
the outputs' distance to the reference's (blocks' output and merger output; ``max |x - ref| / max |ref|`` and ``||x - ref|| / ||ref||``).

Accuracy budget (``--check-frames``, small): each mode's bf16 outputs, and for ``fast`` also the gradients of
every weight and the pixels with the blocks trainable, against a float32 run of the reference (float64 when the
benchmark runs in float32); the fast path passes when its error <= 2 x the reference's own error + 2^-7 (the
rule of tests/gpu). With ``$OUT`` set (or ``--profile-dir``), a ``torch.profiler`` table of one forward per
mode at the largest measured frame count is written there (``vision_profile_<tag>_<mode>.txt``); the top
kernels also go into the JSON. Errors stop the run (after the JSON is written); out of memory is recorded.

    python scripts/bench_vision.py --out-dir docs/results --tag h200                     # 1024 + 256 frames, ~3 min
    python scripts/bench_vision.py --frames 1024 3600 --budget-s 560 --tag h200_hour      # + the hour in one call
    python scripts/bench_vision.py --device cpu --scale tiny --frame-size 56x84 --frames 2 4 \\
        --modes reference fast --check-frames 2 --out-dir /tmp/vision                     # the logic, in seconds
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

from vamba.bench.build import DTYPES, build, device_tag, frame_grid, parse_frame_size, vamba_config
from vamba.data.vision import PATCH_DIM
from vamba.models.flops import vision_flops
from vamba.models.vision import VambaVisionTower
from vamba.utils.io import atomic_write_json
from vamba.utils.provenance import header
from vamba.utils.timing import Clock, free, matmul_tflops, measure

TOWER_MODES = ("reference", "fast", "compiled")
EPS = 2.0 ** -7  # bf16 rounding of an output (tests/gpu's budget)
REPEAT_UNDER_MS = 5000.0


def randomise(tower: torch.nn.Module, seed: int = 0) -> None:
    """Non-zero biases and LayerNorm affine weights (transformers initialises them to 0 and 1, which would hide
    a missed term in the comparison)."""
    g = torch.Generator(device=tower.patch_embed.proj.weight.device).manual_seed(seed)
    with torch.no_grad():
        for name, p in tower.named_parameters():
            if name.endswith("bias") or ".norm" in name or "ln_q" in name:
                p.add_(0.02 * torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype))


def rel(x: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max |x - ref| / max |ref|, ||x - ref|| / ||ref||), in float64, in chunks (no full-size copies)."""
    worst, peak, sq_diff, sq_ref = 0.0, 0.0, 0.0, 0.0
    for a, b in zip(x.reshape(-1).split(1 << 24), ref.reshape(-1).split(1 << 24)):
        diff = a.double() - b.double()
        worst = max(worst, diff.abs().max().item())
        peak = max(peak, b.double().abs().max().item())
        sq_diff += diff.square().sum().item()
        sq_ref += b.double().square().sum().item()
    return worst / max(peak, 1e-30), (sq_diff / max(sq_ref, 1e-300)) ** 0.5


def forward_kwargs(mode: str, attention: str) -> dict[str, Any]:
    return {} if mode == "reference" else {"attention": attention, "compile": mode == "compiled"}


def accuracy_budget(towers: dict[str, torch.nn.Module], modes: list[str], attention: str, frames: int,
             grid_hw: tuple[int, int], device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Errors against a high-precision run of the reference (module docstring), forward for every mode and
    backward (pixels + every weight, blocks trainable) for ``fast``."""
    truth_dtype = torch.float64 if dtype == torch.float32 else torch.float32
    h, w = grid_hw
    grid = torch.tensor([[frames // 2, h, w]], device=device)
    g = torch.Generator(device=device).manual_seed(1)
    master = torch.randn(frames // 2 * h * w, PATCH_DIM, device=device, generator=g)
    truth_tower = copy.deepcopy(towers["reference"]).to(truth_dtype)

    def run(tower: torch.nn.Module, run_dtype: torch.dtype, kwargs: dict, grads: bool) -> list[torch.Tensor]:
        x = master.to(run_dtype).requires_grad_(grads)
        with torch.set_grad_enabled(grads):
            out = tower(x, grid_thw=grid, **kwargs)
            outs = [out.last_hidden_state, out.pooler_output]
            if not grads:
                return outs
            wg = torch.Generator(device=device).manual_seed(2)
            w1, w2 = (torch.randn(t.shape, device=device, generator=wg, dtype=torch.float64) for t in outs)
            loss = (outs[0].double() * w1).sum() + (outs[1].double() * w2).sum()
            return [t.detach() for t in outs] + list(torch.autograd.grad(loss, [x, *tower.parameters()]))

    names = ["last_hidden_state", "pooler_output"]
    result: dict[str, Any] = {"frames": frames, "truth_dtype": str(truth_dtype).removeprefix("torch."), "eps": EPS,
                              "rule": "err(mode) <= 2 * err(reference) + eps, err = max|x - truth| / max|truth|"}
    truth = run(truth_tower, truth_dtype, {}, grads=False)
    reference = run(towers["reference"], dtype, {}, grads=False)
    base = [rel(r, t)[0] for r, t in zip(reference, truth)]
    result["forward"] = {"reference": dict(zip(names, base))}
    failures = []
    for mode in modes:
        if mode == "reference":
            continue
        errs = [rel(o, t)[0] for o, t in zip(run(towers[mode], dtype, forward_kwargs(mode, attention), False), truth)]
        result["forward"][mode] = dict(zip(names, errs))
        failures += [f"{mode} {n}: {e:.3g} > 2 * {b:.3g} + eps"
                     for n, e, b in zip(names, errs, base) if e > 2 * b + EPS]
    if "fast" in modes:
        for tower in (truth_tower, towers["reference"], towers["fast"]):
            tower.train().requires_grad_(True)
        truth_g = run(truth_tower, truth_dtype, {}, grads=True)
        ref_g = run(towers["reference"], dtype, {}, grads=True)
        fast_g = run(towers["fast"], dtype, forward_kwargs("fast", attention), grads=True)
        for tower in (towers["reference"], towers["fast"]):
            tower.eval().requires_grad_(False)
        labels = names + ["d pixels"] + [f"d {n}" for n, _ in towers["reference"].named_parameters()]
        worst = {"fast": 0.0, "reference": 0.0}
        for label, t, r, f in zip(labels, truth_g, ref_g, fast_g):
            err_ref, err_fast = rel(r, t)[0], rel(f, t)[0]
            worst["fast"], worst["reference"] = max(worst["fast"], err_fast), max(worst["reference"], err_ref)
            if err_fast > 2 * err_ref + EPS:
                failures.append(f"fast {label}: {err_fast:.3g} > 2 * {err_ref:.3g} + eps")
        result["backward_worst"] = worst
        result["backward_tensors"] = len(labels)
    del truth_tower
    free(device)
    result["failures"] = failures
    result["passed"] = not failures
    return result


def profile(tower: torch.nn.Module, pixels: torch.Tensor, grid: torch.Tensor, kwargs: dict, path: Path,
            device: torch.device) -> list[dict[str, Any]]:
    """One forward under torch.profiler: the table (top 40 by self device time, or CPU time) to ``path``, the
    top 15 as rows."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.no_grad():  # at a measured size: compiled and autotuned already
        with torch_profile(activities=activities) as prof:
            tower(pixels, grid_thw=grid, **kwargs)
            Clock(device).sync()
    events = prof.key_averages()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(events.table(sort_by=key, row_limit=40, max_name_column_width=100))
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    top = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:15]
    return [{"name": e.key[:120], "self_ms": round(getattr(e, attr) / 1e3, 3), "calls": e.count} for e in top]


def _line(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return row["status"]
    peak = row.get("peak_above_start_gib", float("nan"))
    return (f"{row['total_ms'] / 1e3:8.3f} s {row['tflops']:7.1f} TFLOP/s ({row['fraction_of_matmul_rate']:.0%} of "
            f"matmul), first run {row['first_ms'] / 1e3:.1f} s, peak {peak:.1f} GiB above start, "
            f"max rel diff {row.get('max_rel_diff_pooler_output', 0.0):.2g}")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out-dir", default="docs/results")
    p.add_argument("--tag", default=None, help="file name tag (default: device kind, e.g. h200 or cpu)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--scale", default="7b", choices=["7b", "2b", "tiny"])
    p.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--frames", type=int, nargs="+", default=[1024, 256],
                   help="measured in this order (a later point is skipped when predicted not to fit the budget)")
    p.add_argument("--frame-size", default="640x360", help="WIDTHxHEIGHT of the source frames")
    p.add_argument("--modes", nargs="+", default=list(TOWER_MODES), choices=TOWER_MODES)
    p.add_argument("--attention", default="auto", choices=["auto", "batched", "varlen"],
                   help="vision_attention of the fast modes")
    p.add_argument("--reps", type=int, default=3, help="timed runs per point (median), after one warm-up run")
    p.add_argument("--check-frames", type=int, default=16, help="frames of the accuracy check (0: none)")
    p.add_argument("--profile-dir", default=os.environ.get("OUT"), help="default: $OUT; unset: no profile")
    p.add_argument("--budget-s", type=float, default=170.0, help="skip frame counts predicted not to fit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = DTYPES[args.dtype or ("bfloat16" if cuda else "float32")]
    frames = list(dict.fromkeys(args.frames))
    if any(n < 2 or n % 2 for n in frames + ([args.check_frames] if args.check_frames else [])):
        raise SystemExit("bench_vision: frame counts must be even and >= 2")
    modes = [m for m in TOWER_MODES if m in args.modes]
    grid_hw = frame_grid(*parse_frame_size(args.frame_size))
    _, device_kind = device_tag(device)
    tag = args.tag or device_kind
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"vision_{tag}.json"
    torch.manual_seed(0)

    config = vamba_config(args.scale, "reference").vision_config
    config._attn_implementation = "sdpa"  # what transformers picks for Qwen2-VL (the efficiency benchmark's baseline)
    stock = build(Qwen2VisionTransformerPretrainedModel, config, device, dtype)
    randomise(stock)
    towers: dict[str, torch.nn.Module] = {"reference": stock}
    if set(modes) - {"reference"}:
        fast = build(VambaVisionTower, copy.deepcopy(config), device, dtype)
        fast.load_state_dict(stock.state_dict(), assign=True)  # the same parameter tensors (its own are dropped)
        towers["fast"] = towers["compiled"] = fast
    for tower in towers.values():
        tower.requires_grad_(False)
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {
        "what": __doc__.splitlines()[0], **header(device),
        "setup": {"scale": args.scale, "dtype": str(dtype).removeprefix("torch."), "frame_size": args.frame_size,
                  "patch_grid_per_frame": list(grid_hw), "patches_per_2_frames": grid_hw[0] * grid_hw[1],
                  "vision_config": {k: getattr(config, k) for k in ("depth", "embed_dim", "num_heads", "mlp_ratio",
                                                                     "patch_size", "spatial_merge_size",
                                                                     "hidden_size", "hidden_act")},
                  "reference": "transformers Qwen2VisionTransformerPretrainedModel, attn_implementation sdpa",
                  "fast_attention": args.attention, "reps": args.reps,
                  "parameters": sum(p.numel() for p in stock.parameters())},
        "flops": "forward matmul FLOPs (2 per multiply-add) + attention 4*S*L*D; elementwise not counted",
        "matmul_tflops": float(f"{matmul_tflops(device, dtype):.4g}"), "rows": rows}

    def save() -> None:
        atomic_write_json(json_path, result)

    last: tuple[int, float] | None = None  # (frames, wall seconds of that point: all modes, warm-ups included)
    for n in frames:
        h, w = grid_hw
        grid = torch.tensor([[n // 2, h, w]], device=device)
        flops = vision_flops(config, n // 2, grid_hw)
        predicted = last[1] * n / last[0] if last else 0.0
        if time.monotonic() - started + predicted > args.budget_s:
            rows += [{"frames": n, "mode": m, "status": "skipped: time budget"} for m in modes]
            print(f"{n} frames: skipped (predicted {predicted:.0f} s, budget {args.budget_s:.0f} s)", flush=True)
            save()
            continue
        point_started = time.monotonic()
        pixels = torch.randn(n // 2 * h * w, PATCH_DIM, device=device, dtype=dtype)
        ref_out = None
        for mode in modes:
            tower, kwargs = towers[mode], forward_kwargs(mode, args.attention)
            held: list[Any] = []

            def step() -> None:
                held.clear()  # the previous run's output is freed before this run: peak = one forward
                with torch.no_grad():
                    held.append(tower(pixels, grid_thw=grid, **kwargs))

            out = measure(step, device, reps=args.reps, repeat_under_ms=REPEAT_UNDER_MS)
            row: dict[str, Any] = {"frames": n, "mode": mode, "tokens": n // 2 * h * w,
                                   "flop": flops, **out}
            if out["status"] == "ok":
                seconds = out["total_ms"] / 1e3
                row["tflops"] = float(f"{flops / seconds / 1e12:.4g}")
                row["fraction_of_matmul_rate"] = round(row["tflops"] / result["matmul_tflops"], 4)
                outputs = (held[0].last_hidden_state, held[0].pooler_output)
                if mode == "reference":
                    ref_out = outputs
                elif ref_out is not None:
                    for name, a, b in zip(("last_hidden_state", "pooler_output"), outputs, ref_out):
                        row[f"max_rel_diff_{name}"], row[f"rms_rel_diff_{name}"] = (
                            float(f"{v:.4g}") for v in rel(a, b))
            held.clear()
            rows.append(row)
            save()
            if out["status"] == "error":
                raise RuntimeError(f"{mode} at {n} frames failed: {out['error']} (recorded in {json_path})")
            print(f"{n:>5} frames {mode:<9} {_line(row)}", flush=True)
        del ref_out, pixels
        free(device)
        last = (n, time.monotonic() - point_started)

    if args.check_frames:
        result["accuracy"] = accuracy_budget(towers, modes, args.attention, args.check_frames, grid_hw, device, dtype)
        save()
        print(f"accuracy at {args.check_frames} frames: {'passed' if result['accuracy']['passed'] else 'FAILED'} "
              f"{result['accuracy']['forward']}", flush=True)

    done = [r["frames"] for r in rows if r.get("status") == "ok"]
    if args.profile_dir and done:
        n = max(done)
        h, w = grid_hw
        grid = torch.tensor([[n // 2, h, w]], device=device)
        pixels = torch.randn(n // 2 * h * w, PATCH_DIM, device=device, dtype=dtype)
        result["profile"] = {"frames": n}
        for mode in modes:
            path = Path(args.profile_dir) / f"vision_profile_{tag}_{mode}.txt"
            result["profile"][mode] = profile(towers[mode], pixels, grid, forward_kwargs(mode, args.attention),
                                              path, device)
            print(f"profile of {mode} at {n} frames: {path}", flush=True)
        save()
    result["seconds"] = round(time.monotonic() - started, 1)
    save()
    print(f"wrote {json_path} ({result['seconds']} s)", flush=True)
    if args.check_frames and not result["accuracy"]["passed"]:
        raise SystemExit(f"bench_vision: accuracy budget exceeded: {result['accuracy']['failures']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
