"""The efficiency benchmark's points in a given order (``vamba bench points=[...]``), the goals' points first.

The sweeps of ``vamba.bench.sweep`` measure model by model and frame count by frame count; a run with little device
time measures instead a list of points ``MODEL:MODE:FRAMES`` in the order given (``GOAL_POINTS``: the points the
goals are read from, then the rest), so that a run cut short by its time budget still has the points that matter.
``MODEL:MODE:FRAMES/FALLBACK``: when that point runs out of memory, the point at ``FALLBACK`` frames is measured
next. One model is on the device at a time (switching rebuilds it in about a second; compiled kernels outlive it).
Each (model, mode) is warmed once on a small video before its first point (Triton autotuning, the vision tower's
compilation); every point is then timed by ``vamba.bench.sweep.measure_point`` (prefill points always once more
after a warming run, so the hour's first run, which compiles its last piece's shapes, is not the one timed). A point
predicted not to fit the time left is recorded as skipped; after an out-of-memory point, the larger points of the
same model and mode are not run. Modes: those of the sweeps, ``stage1`` (cross-attention, Mamba-2 blocks, alpha
trainable) and ``answer_file`` (``vamba.bench.hour``: the hour answered end to end from ``answer_video``).
With ``profile=true`` each timed point runs once more under torch.profiler (``_profile``): where a point's time goes,
e.g. FP8 against bf16 (docs/fp8.md).
"""
from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vamba.bench.build import Setup, build
from vamba.bench.flops import llm_flops
from vamba.bench.hour import answer_from_file, wait_for
from vamba.bench.steps import qwen_steps, set_trainable, vamba_steps
from vamba.bench.sweep import VisionTimer, measure_point, row_line
from vamba.models.flops import vision_flops
from vamba.utils.io import atomic_write_text
from vamba.utils.timing import Clock, free, is_oom

GOAL_POINTS = ("vamba:prefill:1024", "qwen2_vl:prefill:1024", "vamba:prefill:3600", "vamba:answer_file:3600",
               "vamba:train:1024/512", "vamba:train_shared:256", "vamba:train_shared:1024", "vamba:stage1:256",
               "vamba:stage1:1024", "vamba:train:256", "qwen2_vl:train:256", "vamba:prefill:256", "vamba:prefill:512",
               "vamba:prefill:2048")
MODES = ("prefill", "train", "train_shared", "train_offload", "stage1", "answer_file")
WARM_FRAMES = 64  # each (model, mode) is warmed on at most this many frames
# Points whose first run takes under this get one warming run, then the timed one. The first run at a new size can
# compile: the whole-LLM training step at 1024 frames, timed on its first run (21.9 s, 2026-12-02), spent 9 s more in
# the vision tower than the points after it, most likely recompiling it for a token count past 2**31 MLP elements
# (docs/results/train_launched_h100.md).
WARM_UNDER_MS = 60_000.0


@dataclass(frozen=True)
class Point:
    model: str
    mode: str
    frames: int
    fallback: int | None = None  # frames to measure instead when this point runs out of memory

    def __str__(self) -> str:
        return f"{self.model}:{self.mode}:{self.frames}" + (f"/{self.fallback}" if self.fallback else "")

    @classmethod
    def parse(cls, text: str) -> Point:
        try:
            model, mode, frames = text.split(":")
            frames, _, fallback = frames.partition("/")
            point = cls(model, mode, int(frames), int(fallback) if fallback else None)
        except ValueError:
            raise ValueError(f"points: {text!r} is not MODEL:MODE:FRAMES[/FALLBACK]") from None
        if model not in ("vamba", "qwen2_vl") or mode not in MODES:
            raise ValueError(f"points: {text!r}: model vamba or qwen2_vl, mode one of {MODES}")
        if model == "qwen2_vl" and mode not in ("prefill", "train"):
            raise ValueError(f"points: {text!r}: Qwen2-VL has the modes prefill and train")
        if any(n is not None and (n < 2 or n % 2) for n in (point.frames, point.fallback)):
            raise ValueError(f"points: {text!r}: frame counts must be even and >= 2")
        return point


class Models:
    """The model of the current point on the device, its steps and its vision tower's timer (one at a time)."""

    def __init__(self, builders: dict[str, tuple[type, Any]], setup: Setup, clock: Clock, result: dict) -> None:
        self.builders, self.setup, self.clock, self.result = builders, setup, clock, result
        self.name: str | None = None
        self.model = self.steps = self.timer = None

    def get(self, name: str):
        if name != self.name:
            self.release()
            cls, config = self.builders[name]
            started = time.monotonic()
            model = build(cls, config, self.setup.device, self.setup.dtype)
            with warnings.catch_warnings():  # renamed activation_checkpointing_enable in transformers 5.2x
                warnings.simplefilter("ignore", FutureWarning)
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            tower = model.visual if name == "vamba" else model.model.visual
            info = self.result["models"].setdefault(name, {"class": cls.__name__, "trainable": {}, "warmup_s": {}})
            info.update(parameters=sum(p.numel() for p in model.parameters()),
                        vision=sum(p.numel() for p in tower.parameters()),
                        build_s=round(time.monotonic() - started, 1))
            self.name, self.model, self.timer = name, model, VisionTimer(tower, self.clock)
            self.steps = vamba_steps(model, self.setup) if name == "vamba" else qwen_steps(model, self.setup)
        return self.model, self.steps, self.timer

    def release(self) -> None:
        if self.timer is not None:
            self.timer.remove()
        self.name = self.model = self.steps = self.timer = None
        free(self.setup.device)


def run_points(points: list[Point], args: argparse.Namespace, setup: Setup, builders: dict[str, tuple[type, Any]],
               result: dict, record: Callable[[dict], None], started: float) -> None:
    """Measure ``points`` in order within ``args.budget_s`` seconds from ``started`` (module docstring)."""
    clock = Clock(setup.device)
    models = Models(builders, setup, clock, result)
    warmed: set[tuple[str, str]] = set()
    measured: dict[tuple[str, str], tuple[int, float]] = {}
    failed: dict[tuple[str, str], int] = {}  # smallest frame count that ran out of memory
    queue = list(points)
    while queue:
        point = queue.pop(0)
        key = (point.model, point.mode)
        row: dict[str, Any] = {"model": point.model, "mode": point.mode, "frames": point.frames,
                               "video_tokens": setup.video_tokens(point.frames)}
        predicted = _predict(point, measured, growth=1.0 if point.model == "vamba" else 1.6)
        left = args.budget_s - (time.monotonic() - started)
        if key in failed and point.frames >= failed[key]:
            row["status"] = "not run: smaller point out of memory"
        elif predicted is not None and (predicted > left or predicted > args.point_cap_s):
            row.update(status="skipped: time budget", predicted_s=round(predicted, 1), left_s=round(left, 1))
        elif left <= 0:
            row["status"] = "skipped: time budget"
        else:
            row.update(_measure(point, args, setup, models, warmed, result))
        record(row)
        print(row_line(row) if row["mode"] != "answer_file" else _answer_line(row), flush=True)
        if row["status"] == "ok":
            measured[key] = (point.frames, row["total_ms"] / 1e3)
        elif row["status"] == "oom":
            failed[key] = min(point.frames, failed.get(key, point.frames))
            if point.fallback is not None:
                queue.insert(0, Point(point.model, point.mode, point.fallback))
    models.release()


def _predict(point: Point, measured: dict, growth: float) -> float | None:
    """Seconds the point will take (its warming run included), from the last measured point of its model and mode."""
    if point.mode == "answer_file":
        known = measured.get((point.model, "prefill"))
    else:
        known = measured.get((point.model, point.mode))
    if known is None:
        return None
    frames, seconds = known
    one = seconds * (point.frames / frames) ** growth * 1.1
    return one * (2 if 1e3 * one < WARM_UNDER_MS and point.mode != "answer_file" else 1)


def _measure(point: Point, args: argparse.Namespace, setup: Setup, models: Models, warmed: set,
             result: dict) -> dict[str, Any]:
    started = time.monotonic()
    try:
        model, steps, timer = models.get(point.model)
    except Exception as e:  # noqa: BLE001 - a model that does not fit is this point's out of memory
        if not is_oom(e):
            raise
        models.release()
        return {"status": "oom"}
    info = result["models"][point.model]
    mode = point.mode
    info["trainable"][mode] = set_trainable(model, point.model, "prefill" if mode == "answer_file" else mode)
    config = model.config
    if point.mode == "answer_file":
        if (point.model, "prefill") not in warmed:
            _warm(point.model, "prefill", steps, point.frames, setup, info, warmed)
        out = _answer_file(point, args, model, timer)
    else:
        if (point.model, mode) not in warmed:
            _warm(point.model, mode, steps, point.frames, setup, info, warmed)
        try:
            run = steps[mode](point.frames)
        except Exception as e:  # noqa: BLE001 - inputs that do not fit are an out of memory of this point
            if not is_oom(e):
                raise
            return {"status": "oom"}
        out = measure_point(run, setup.device, timer, args.reps, warm_under_ms=WARM_UNDER_MS)
        if out["status"] == "ok":
            out.update(getattr(run, "extra", {}))
            if result.get("profile_prefix"):
                out["profile"] = _profile(run, setup.device, f"{result['profile_prefix']}_{point.model}_{mode}_"
                                                            f"{point.frames}.txt", f"{point} ({out['total_ms']:.1f} ms timed)")
        del run
        free(setup.device)
    if out["status"] != "ok":
        return out
    out["seconds_incl_setup"] = round(time.monotonic() - started, 2)
    rate = result["matmul_tflops"] * 1e12
    if "vision_ms" in out and out["vision_ms"] > 0:
        tflop = vision_flops(config.vision_config, point.frames // 2, setup.grid_hw)
        out["vision_tflop"] = round(tflop / 1e12, 3)
        out["vision_mfu"] = round(tflop / (out["vision_ms"] / 1e3) / rate, 4)
    if point.mode != "answer_file" and out.get("llm_ms", 0) > 0:
        flops = llm_flops(point.model, config, setup, mode, point.frames)
        out["llm_tflop"] = round(flops / 1e12, 3)
        out["llm_mfu"] = round(flops / (out["llm_ms"] / 1e3) / rate, 4)
    return out


def _profile(run: Callable[[], Any], device: torch.device, path: str, title: str) -> str:
    """One more run of a timed point under torch.profiler; its operators by device time (CPU time on a CPU) go to
    ``path``. Returns the file's name."""
    cuda = device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    clock = Clock(device)
    with torch.profiler.profile(activities=activities) as prof:
        run()
        clock.sync()
    sort = "cuda_time_total" if cuda else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=60, max_name_column_width=80)
    atomic_write_text(Path(path), f"{title}: one run under torch.profiler, operators by {sort}\n{table}")
    return Path(path).name


def _warm(name: str, mode: str, steps: dict, frames: int, setup: Setup, info: dict, warmed: set) -> None:
    """Compile and autotune the kernels of ``mode`` on a small video before its first timed point."""
    started = time.monotonic()
    warm = steps.get(f"{mode}_warmup") or steps["train_warmup"]
    try:
        warm(min(WARM_FRAMES, frames))()
        Clock(setup.device).sync()
    except Exception as e:  # noqa: BLE001 - the timed point records what goes wrong
        print(f"{name} {mode}: warm-up failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
    free(setup.device)
    info["warmup_s"][mode] = round(time.monotonic() - started, 1)
    warmed.add((name, mode))
    print(f"{name} {mode}: warm-up took {info['warmup_s'][mode]} s", flush=True)


def _answer_file(point: Point, args: argparse.Namespace, model, timer: VisionTimer) -> dict[str, Any]:
    video = Path(args.answer_video) if args.answer_video else None
    if video is None:
        return {"status": "error", "error": "no answer_video given"}
    missing = wait_for(video, args.answer_video_wait_s)
    if missing:
        return {"status": "error", "error": missing}
    return answer_from_file(model, video, point.frames, args.answer_tokens, args.piece_frames, args.workers,
                            vision_ms=timer.take_ms)


def _answer_line(row: dict) -> str:
    if row.get("status") != "ok":
        return f"vamba    answer_file  {row['frames']:>6} frames  {row['status']} {row.get('error', '')}"
    return (f"vamba    answer_file  {row['frames']:>6} frames  first token {row['time_to_first_token_ms'] / 1e3:.2f} s, "
            f"{row['decode_tokens_per_s']:.1f} tokens/s, host waits {row['host_wait_s']:.2f} s, "
            f"{row.get('peak_gib', float('nan')):.1f} GiB")
