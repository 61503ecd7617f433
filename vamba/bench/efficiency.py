"""Efficiency benchmark (``vamba bench``, ``scripts/bench_efficiency.py``): VAMBA vs the Qwen2-VL transformer.

Both models at the same scale (``7b``: Qwen2-VL-7B sizes; ``2b``; ``tiny`` for CPU checks), random weights,
built directly on the device (``vamba.bench.build``). Qwen2-VL is transformers' own
``Qwen2VLForConditionalGeneration`` (SDPA) with one ``<|video_pad|>`` per merged video token (full self-attention
over video + text); VAMBA gets the same video in its own stream. Inputs are synthetic pixel tensors of the exact
Qwen2-VL shape for ``frame_size`` (640x360 -> smart resize 644x364 -> 1196 patches per frame pair, 299 merged
tokens per 2 frames). Swept over frame counts (64, 128, 256, ... until out of memory), per model and mode
(``vamba.bench.steps``):

- ``prefill``: video + a short question -> caches and the first token's logits (no grad). VAMBA uses its
  streaming prefill (``piece_frames`` frames per piece); Qwen2-VL one forward.
- ``train``: one forward+backward with gradient checkpointing; trainable: the LLM (every parameter outside
  the vision tower; VAMBA's LLM includes its cross-attention, Mamba-2 blocks and alpha), the vision tower
  frozen; loss on the text tokens only for both.
- ``train_shared``: VAMBA training only the weights it shares with Qwen2-VL's LLM.
- ``train_offload``: VAMBA's ``train`` with each checkpointed layer's inputs kept in pinned host memory until
  backward (``set_checkpoint_offload``; ``host_bytes`` per step in the JSON); compared with Qwen2-VL's ``train``.
- one VAMBA *stage-1* step (trainable: cross-attention, Mamba-2 blocks, alpha) at ``stage1_frames`` frames.

Per point (``vamba.bench.sweep``): wall time (``vamba.utils.timing.measure``: the first run of a point under 60 s
only warms, then the median of 3 more runs, or 1 more above a second), the vision tower's share (forward hooks on
the tower) and the LLM's (the rest), peak allocated memory (total, and above what was allocated before the step:
weights + inputs), or ``oom``. Kernels are warmed (Triton compilation) on the smallest point before each sweep.
The VAMBA LLM's model FLOPs utilisation (``vamba.models.flops``) is given against the device's measured bf16
matmul rate. Results are written after every point (a killed run keeps what it measured):
``efficiency_<tag>.json``, ``efficiency_stage1_<tag>.json``, plots ``efficiency_<tag>_{memory,time}.png`` and
the summary ``efficiency_<tag>.md`` (``vamba.bench.efficiency_report``).

    python scripts/bench_efficiency.py out=docs/results tag=h100                    # 7B on the GPU
    vamba bench device=cpu scale=tiny num_frames=[4,8] out=/tmp/bench               # CPU check of the logic

Only torch, transformers, matplotlib and this package are imported (the GPU image has no hydra/decord/av).
"""
from __future__ import annotations

import functools
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from vamba.bench.build import DTYPES, Setup, build, device_tag, frame_grid, parse_frame_size, qwen_config, vamba_config
from vamba.bench.efficiency_report import HOUR_FRAMES, REFERENCE_QWEN2_VL_7B_H100, write_report
from vamba.bench.flops import llm_flops
from vamba.bench.plan import GOAL_POINTS, Point, run_points
from vamba.bench.steps import qwen_steps, set_trainable, vamba_steps
from vamba.bench.sweep import Budget, Sweeper, VisionTimer, answer, stage1
from vamba.utils.cli_args import auto_dtype, parse_args
from vamba.utils.io import atomic_write_json
from vamba.utils.provenance import header
from vamba.utils.timing import GIB, Clock, free, matmul_tflops

DEFAULT_FRAMES = [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]


PRECISIONS = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}  # a row's `precision`
Model = Literal["vamba", "qwen2_vl"]
Mode = Literal["prefill", "train", "train_shared", "train_offload"]


@dataclass
class BenchConfig:
    out: str = "docs/results"  # folder of the JSON, plots and summary
    tag: str | None = None  # file name tag (default: device kind, e.g. h100 or cpu)
    device: str = "auto"  # auto (cuda when present, else cpu) | cpu | cuda | cuda:N
    scale: Literal["7b", "2b", "tiny"] = "7b"  # model dimensions (tiny: CPU checks)
    dtype: str = "auto"  # auto (bfloat16 on CUDA, float32 on CPU) | bfloat16 | float16 | float32
    num_frames: list[int] | None = None  # frame counts swept (default: 64, 128, ... 16384)
    hour_point: bool = True  # add an hour of frames (HOUR_FRAMES) to VAMBA's prefill sweep
    frame_size: str = "640x360"  # WIDTHxHEIGHT of the source frames
    # measured in this order (the baseline first: it is bounded by memory early)
    models: list[Model] = field(default_factory=lambda: ["qwen2_vl", "vamba"])
    # train_shared: VAMBA training only the weights it shares with Qwen2-VL's LLM; train_offload: VAMBA's train with
    # checkpointed layer inputs in host memory
    modes: list[Mode] = field(default_factory=lambda: ["prefill", "train", "train_shared", "train_offload"])
    question_tokens: int = 32  # text tokens of the question (prefill)
    train_tokens: int = 128  # text tokens of a training sample
    piece_frames: int = 128  # VAMBA streaming prefill: frames per piece
    answer_frames: int = HOUR_FRAMES  # VAMBA: decode answer_tokens after streaming this many frames (a prefill point)
    answer_tokens: int = 32  # 0: no answer point
    stage1_frames: int = 256  # 0: no stage-1 point
    reps: int = 3  # runs per point (median) when one run takes under 1 s
    budget_s: float = 420.0  # wall-clock budget for all sweeps
    point_cap_s: float = 120.0  # skip a point predicted to take longer
    memory_gib: float | None = None  # cap this process's GPU memory (e.g. 79.1: an 80 GB H100's room on a larger GPU)
    report_only: str | None = None  # only (re)write the summary and plots of this results JSON
    mamba_backend: str | None = None  # default: fast on CUDA (fail loudly), reference on CPU
    vision_compile: bool | None = None  # VAMBA's vision tower compiled (VambaConfig.vision_compile; default: on CUDA)
    vision_piece_frames: int | None = None  # a frozen tower's frames per call in training (VambaConfig's default: 512)
    fp8: str = "none"  # VAMBA's layers in FP8 (VambaConfig.fp8: none | vision | all; Hopper); rows carry `precision`
    # measure these points (MODEL:MODE:FRAMES[/FALLBACK]) in this order instead of the sweeps (vamba.bench.plan;
    # 'goals': the goals' points first)
    points: list[str] | None = None
    # with points: each point run once more under torch.profiler after its timing, its operators by device time
    # written to profile_<tag>_<model>_<mode>_<frames>.txt beside the JSON (the row's `profile`)
    profile: bool = False
    answer_video: str | None = None  # answer_file points: the video file (e.g. an hour at 1 fps)
    answer_video_wait_s: float = 120.0  # answer_file: wait this long for the video to appear (another writer)
    workers: int = 8  # answer_file: threads resizing the decoded frames


def parse(argv: list[str]) -> BenchConfig:
    return parse_args(BenchConfig, argv, prog="vamba bench", doc=__doc__ or "",
                      deprecated={"frames": "num_frames", "out_dir": "out"})


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.report_only:
        summary = write_report(Path(args.report_only))
        print(summary[summary.index("## Goals"):])
        return 0
    from transformers import Qwen2VLForConditionalGeneration

    from vamba.models import VambaForConditionalGeneration

    started = time.monotonic()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    cuda = device.type == "cuda"
    dtype = DTYPES[auto_dtype(args.dtype, str(device))]
    grid_hw = frame_grid(*parse_frame_size(args.frame_size))
    frames = sorted(set(args.num_frames or DEFAULT_FRAMES))
    if any(n < 2 or n % 2 for n in frames):
        raise SystemExit("vamba bench: frame counts must be even and >= 2")
    if args.profile and not args.points:
        raise SystemExit("vamba bench: profile=true profiles the points of points=[...]; the sweeps are not profiled")
    _, device_kind = device_tag(device)
    tag = args.tag or device_kind
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    setup = Setup(device, dtype, grid_hw, args.question_tokens, args.train_tokens, args.piece_frames)
    mamba_backend = args.mamba_backend or ("fast" if cuda else "reference")
    vcfg = vamba_config(args.scale, mamba_backend)
    vcfg.vision_compile = cuda if args.vision_compile is None else args.vision_compile
    if args.vision_piece_frames is not None:
        vcfg.vision_piece_frames = args.vision_piece_frames
    vcfg.fp8 = args.fp8
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
        "what": __doc__.splitlines()[0], **header(device),
        "device_memory_gib": round(torch.cuda.get_device_properties(device).total_memory / GIB, 1) if cuda else None,
        "memory_cap_gib": args.memory_gib,
        "setup": {"scale": args.scale, "dtype": str(dtype).removeprefix("torch."), "frame_size": args.frame_size,
                  "patch_grid_per_frame": list(grid_hw), "tokens_per_2_frames": setup.video_tokens(2),
                  "question_tokens": args.question_tokens, "train_tokens": args.train_tokens,
                  "piece_frames": args.piece_frames, "mamba_backend": mamba_backend,
                  "qwen2_vl_attention": "sdpa", "vamba_attention": vcfg.attention_backend,
                  "vamba_vision_attention": vcfg.vision_attention, "vamba_vision_compile": vcfg.vision_compile,
                  "vamba_vision_piece_frames": vcfg.vision_piece_frames, "vamba_fp8": vcfg.fp8,
                  "cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
                  "points": [str(p) for p in points] if points else None},
        "reference_qwen2_vl_7b_h100": REFERENCE_QWEN2_VL_7B_H100,
        "matmul_tflops": float(f"{matmul_tflops(device, dtype):.4g}"), "models": {}, "rows": rows}
    if args.profile:
        result["profile_prefix"] = str(out_dir / f"profile_{tag}")
    if args.fp8 != "none":  # the FP8 floor's denominator: Hopper's FP8 GEMM, row-wise scales
        result["fp8_matmul_tflops"] = float(f"{matmul_tflops(device, torch.float8_e4m3fn):.4g}")
    if cuda:
        from vamba.ops import available

        result["kernels"] = available()
    json_path = out_dir / f"efficiency_{tag}.json"

    def record(row: dict) -> None:
        row.setdefault("precision", "fp8" if row.get("model") == "vamba" and args.fp8 != "none" else
                       PRECISIONS.get(dtype, str(dtype)))
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
