"""Efficiency benchmark (``vamba bench``, ``scripts/bench_efficiency.py``): VAMBA vs the Qwen2-VL transformer.

Both models at the same scale (``7b``: Qwen2-VL-7B sizes; ``2b``; ``tiny`` for CPU checks), random weights,
built directly on the device (``vamba.bench.build``). Qwen2-VL is transformers' own
``Qwen2VLForConditionalGeneration`` (SDPA) with one ``<|video_pad|>`` per merged video token (full self-attention
over video + text); VAMBA gets the same video in its own stream. Inputs are synthetic pixel tensors of the exact
Qwen2-VL shape for ``--frame-size`` (640x360 -> smart resize 644x364 -> 1196 patches per frame pair, 299 merged
tokens per 2 frames). Swept over frame counts (64, 128, 256, ... until out of memory), per model and mode
(``vamba.bench.steps``):

- ``prefill``: video + a short question -> caches and the first token's logits (no grad). VAMBA uses its
  streaming prefill (``--piece-frames`` frames per piece); Qwen2-VL one forward.
- ``train``: one forward+backward with gradient checkpointing; trainable: the LLM (every parameter outside
  the vision tower; VAMBA's LLM includes its cross-attention, Mamba-2 blocks and alpha), the vision tower
  frozen; loss on the text tokens only for both.
- ``train_shared``: VAMBA training only the weights it shares with Qwen2-VL's LLM.
- ``train_offload``: VAMBA's ``train`` with each checkpointed layer's inputs kept in pinned host memory until
  backward (``set_checkpoint_offload``; ``host_bytes`` per step in the JSON); compared with Qwen2-VL's ``train``.
- one VAMBA *stage-1* step (trainable: cross-attention, Mamba-2 blocks, alpha) at ``--stage1-frames`` frames.

Per point (``vamba.bench.sweep``): wall time (``vamba.utils.timing.measure``: the first run of a point under 15 s
only warms, then the median of 3 more runs, or 1 more above a second), the vision tower's share (forward hooks on
the tower) and the LLM's (the rest), peak allocated memory (total, and above what was allocated before the step:
weights + inputs), or ``oom``. Kernels are warmed (Triton compilation) on the smallest point before each sweep.
The VAMBA LLM's model FLOPs utilisation (``vamba.bench.flops``) is given against the device's measured bf16
matmul rate. Results are written after every point (a killed run keeps what it measured):
``efficiency_<tag>.json``, ``efficiency_stage1_<tag>.json``, plots ``efficiency_<tag>_{memory,time}.png`` and
the summary ``efficiency_<tag>.md`` (``vamba.bench.efficiency_report``).

    python scripts/bench_efficiency.py --out-dir docs/results --tag h100            # 7B on the GPU
    vamba bench --device cpu --scale tiny --frames 4 8 --out-dir /tmp/bench         # CPU check of the logic

Only torch, transformers, matplotlib and this package are imported (the GPU image has no hydra/decord/av).
"""
from __future__ import annotations

import argparse
import datetime
import functools
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from vamba.bench.build import DTYPES, Setup, build, device_tag, frame_grid, parse_frame_size, qwen_config, vamba_config
from vamba.bench.efficiency_report import HOUR_FRAMES, REFERENCE_QWEN2_VL_7B_H100, write_report
from vamba.bench.flops import llm_flops
from vamba.bench.plan import GOAL_POINTS, Point, run_points
from vamba.bench.steps import qwen_steps, set_trainable, vamba_steps
from vamba.bench.sweep import Budget, Sweeper, VisionTimer, answer, stage1
from vamba.utils.io import atomic_write_json
from vamba.utils.provenance import code_commit, environment
from vamba.utils.timing import GIB, Clock, free, matmul_tflops

DEFAULT_FRAMES = [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vamba bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="docs/results")
    p.add_argument("--tag", default=None, help="file name tag (default: device kind, e.g. h100 or cpu)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--scale", default="7b", choices=["7b", "2b", "tiny"])
    p.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--frames", type=int, nargs="+", default=None, help=f"default: {DEFAULT_FRAMES}")
    p.add_argument("--hour-point", action=argparse.BooleanOptionalAction, default=True,
                   help=f"add {HOUR_FRAMES} frames to VAMBA's prefill sweep")
    p.add_argument("--frame-size", default="640x360", help="WIDTHxHEIGHT of the source frames")
    p.add_argument("--models", nargs="+", default=["qwen2_vl", "vamba"], choices=["vamba", "qwen2_vl"],
                   help="measured in this order (the baseline first: it is bounded by memory early)")
    p.add_argument("--modes", nargs="+", default=["prefill", "train", "train_shared", "train_offload"],
                   choices=["prefill", "train", "train_shared", "train_offload"],
                   help="train_shared: VAMBA training only the weights it shares with Qwen2-VL's LLM; "
                        "train_offload: VAMBA's train with checkpointed layer inputs in host memory")
    p.add_argument("--question-tokens", type=int, default=32)
    p.add_argument("--train-tokens", type=int, default=128)
    p.add_argument("--piece-frames", type=int, default=128, help="VAMBA streaming prefill: frames per piece")
    p.add_argument("--answer-frames", type=int, default=HOUR_FRAMES,
                   help="VAMBA: decode --answer-tokens after streaming this many frames (a prefill point)")
    p.add_argument("--answer-tokens", type=int, default=32, help="0: no answer point")
    p.add_argument("--stage1-frames", type=int, default=256, help="0: no stage-1 point")
    p.add_argument("--reps", type=int, default=3, help="runs per point (median) when one run takes under 1 s")
    p.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget for all sweeps")
    p.add_argument("--point-cap-s", type=float, default=120.0, help="skip a point predicted to take longer")
    p.add_argument("--memory-gib", type=float, default=None,
                   help="cap this process's GPU memory (e.g. 79.1: an 80 GB H100's room on a larger GPU)")
    p.add_argument("--report-only", metavar="JSON", help="only (re)write the summary and plots of a results JSON")
    p.add_argument("--mamba-backend", default=None, help="default: fast on CUDA (fail loudly), reference on CPU")
    p.add_argument("--vision-compile", action=argparse.BooleanOptionalAction, default=None,
                   help="VAMBA's vision tower compiled (VambaConfig.vision_compile; default: on CUDA)")
    p.add_argument("--points", nargs="+", metavar="MODEL:MODE:FRAMES[/FALLBACK]",
                   help="measure these points in this order instead of the sweeps (vamba.bench.plan; 'goals': "
                        "the goals' points first)")
    p.add_argument("--answer-video", default=None, help="answer_file points: the video file (e.g. an hour at 1 fps)")
    p.add_argument("--answer-video-wait-s", type=float, default=120.0,
                   help="answer_file: wait this long for the video to appear (another process may be writing it)")
    p.add_argument("--workers", type=int, default=8, help="answer_file: threads resizing the decoded frames")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.report_only:
        summary = write_report(Path(args.report_only))
        print(summary[summary.index("## Goals"):])
        return 0
    from transformers import Qwen2VLForConditionalGeneration

    from vamba.models import VambaForConditionalGeneration

    started = time.monotonic()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = DTYPES[args.dtype or ("bfloat16" if cuda else "float32")]
    grid_hw = frame_grid(*parse_frame_size(args.frame_size))
    frames = sorted(set(args.frames or DEFAULT_FRAMES))
    if any(n < 2 or n % 2 for n in frames):
        raise SystemExit("vamba bench: frame counts must be even and >= 2")
    device_name, device_kind = device_tag(device)
    tag = args.tag or device_kind
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    setup = Setup(device, dtype, grid_hw, args.question_tokens, args.train_tokens, args.piece_frames)
    mamba_backend = args.mamba_backend or ("fast" if cuda else "reference")
    vcfg = vamba_config(args.scale, mamba_backend)
    vcfg.vision_compile = cuda if args.vision_compile is None else args.vision_compile
    qcfg = qwen_config(vcfg)
    points = None
    if args.points:
        points = [Point.parse(t) for t in (GOAL_POINTS if args.points == ["goals"] else args.points)]
    if args.memory_gib and cuda:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_gib * GIB / total),
                                                   torch.cuda.current_device() if device.index is None else device)
    clock = Clock(device)
    rows: list[dict] = []
    result: dict[str, Any] = {
        "what": __doc__.splitlines()[0], "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "device": device_name, "environment": environment(), "code_commit": code_commit(),
        "device_memory_gib": round(torch.cuda.get_device_properties(device).total_memory / GIB, 1) if cuda else None,
        "memory_cap_gib": args.memory_gib,
        "setup": {"scale": args.scale, "dtype": str(dtype).removeprefix("torch."), "frame_size": args.frame_size,
                  "patch_grid_per_frame": list(grid_hw), "tokens_per_2_frames": setup.video_tokens(2),
                  "question_tokens": args.question_tokens, "train_tokens": args.train_tokens,
                  "piece_frames": args.piece_frames, "mamba_backend": mamba_backend,
                  "qwen2_vl_attention": "sdpa", "vamba_attention": vcfg.attention_backend,
                  "vamba_vision_attention": vcfg.vision_attention, "vamba_vision_compile": vcfg.vision_compile,
                  "cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
                  "points": [str(p) for p in points] if points else None},
        "reference_qwen2_vl_7b_h100": REFERENCE_QWEN2_VL_7B_H100,
        "matmul_tflops": float(f"{matmul_tflops(device, dtype):.4g}"), "models": {}, "rows": rows}
    if cuda:
        from vamba.ops import available

        result["kernels"] = available()
    json_path = out_dir / f"efficiency_{tag}.json"

    def record(row: dict) -> None:
        rows.append(row)
        atomic_write_json(json_path, result)

    if points:
        builders = {"vamba": (VambaForConditionalGeneration, vcfg), "qwen2_vl": (Qwen2VLForConditionalGeneration, qcfg)}
        run_points(points, args, setup, builders, result, record, started)
        atomic_write_json(json_path, result)
        summary = write_report(json_path)
        print("\n" + summary[summary.index("## Goals"):])
        return 0

    weights = {"qwen2_vl_prefill": 1.0, "qwen2_vl_train": 1.3, "vamba_prefill": 1.3, "vamba_train": 1.0,
               "vamba_train_shared": 0.7, "vamba_train_offload": 1.0, "stage1": 0.3}
    active = {f"{m}_{mode}" for m in args.models for mode in args.modes} | {"stage1"}
    budget = Budget(args.budget_s, {k: w for k, w in weights.items() if k in active})
    sweeper = Sweeper(setup, clock, budget, args.point_cap_s, args.reps, result["matmul_tflops"], record)

    for name in args.models:
        cls, config = ((VambaForConditionalGeneration, vcfg) if name == "vamba"
                       else (Qwen2VLForConditionalGeneration, qcfg))
        started = time.monotonic()
        model = build(cls, config, device, dtype)
        with warnings.catch_warnings():  # renamed activation_checkpointing_enable in transformers 5.2x; 5.17 lacks it
            warnings.simplefilter("ignore", FutureWarning)
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        tower = model.visual if name == "vamba" else model.model.visual
        info = result["models"][name] = {
            "class": cls.__name__, "parameters": sum(p.numel() for p in model.parameters()),
            "vision": sum(p.numel() for p in tower.parameters()), "build_s": round(time.monotonic() - started, 1),
            "trainable": {}, "warmup_s": {}}
        timer = sweeper.timer = VisionTimer(tower, clock)
        steps = vamba_steps(model, setup) if name == "vamba" else qwen_steps(model, setup)
        for mode in args.modes:
            if mode in ("train_shared", "train_offload") and name != "vamba":
                continue  # VAMBA-only variants, compared with Qwen2-VL's "train"
            info["trainable"][mode] = set_trainable(model, name, mode)
            points = frames + ([HOUR_FRAMES] if name == "vamba" and mode == "prefill" and args.hour_point
                               and args.scale != "tiny" else [])
            flops = functools.partial(llm_flops, name, config, setup, mode)
            info["warmup_s"][mode] = sweeper.run(name, mode, steps[mode], steps[f"{mode}_warmup"],
                                                 sorted(set(points)), flops, growth=1.0 if name == "vamba" else 1.6)
        if name == "vamba" and "prefill" in args.modes and args.answer_tokens:
            answer(steps["answer"], sweeper, args, result)
        if name == "vamba" and args.stage1_frames:
            info["trainable"]["stage1"] = set_trainable(model, name, "stage1")
            stage1(model, setup, clock, timer, args, result, out_dir / f"efficiency_stage1_{tag}.json")
        timer.remove()
        del model, steps
        free(device)
        if cuda:  # should be ~0: anything left would shrink the next model's room
            info["allocated_after_gib"] = round(torch.cuda.memory_allocated() / GIB, 3)
        atomic_write_json(json_path, result)

    summary = write_report(json_path)
    print("\n" + summary[summary.find("VAMBA LLM model FLOPs") if "VAMBA LLM model FLOPs" in summary
                          else summary.index("## Goals"):])
    return 0


if __name__ == "__main__":
    sys.exit(main())
