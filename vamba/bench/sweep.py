"""The efficiency benchmark's sweep: frame counts in increasing order under a wall-clock budget, each point timed
with its vision tower's share (``VisionTimer``), an out-of-memory or failed point stopping its sweep; the
``answer`` row (an hour streamed, a reply decoded) and the stage-1 step (``vamba.bench.efficiency``)."""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vamba.bench.build import Setup
from vamba.bench.efficiency_report import at
from vamba.bench.steps import Step, vamba_steps
from vamba.utils.io import atomic_write_json
from vamba.utils.timing import Clock, free, is_oom, measure


class VisionTimer:
    """Forward hooks on the vision tower: the time spent inside it during one measured call."""

    def __init__(self, tower: torch.nn.Module, clock: Clock) -> None:
        self.clock = clock
        self.spans: list[list] = []
        self.handles = [tower.register_forward_pre_hook(lambda *_: self.spans.append([clock.mark(), None])),
                        tower.register_forward_hook(lambda *_: self.spans[-1].__setitem__(1, clock.mark()))]

    def take_ms(self) -> float:
        # A span without an end: the tower raised (the failing point is recorded by ``measure``).
        total = sum(self.clock.ms(a, b) for a, b in self.spans if b is not None)
        self.spans = []
        return total

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def measure_point(step: Step, device: torch.device, timer: VisionTimer, reps: int = 3,
                  warm_under_ms: float = 15000.0) -> dict[str, Any]:
    """``vamba.utils.timing.measure`` of one point: the first run only warms when it took under ``warm_under_ms``,
    then the median of ``reps`` runs (one run above a second); ``vision_ms`` (the tower) and ``llm_ms`` (the rest)."""
    out = measure(step, device, reps=reps, repeat_under_ms=1000.0, warm_under_ms=warm_under_ms, part=timer.take_ms)
    if out["status"] == "ok":
        vision = out.pop("part_ms")
        out["vision_ms"], out["llm_ms"] = vision, round(out["total_ms"] - vision, 3)
    return out


class Budget:
    """Wall-clock budget split into phases; a phase's unused time passes on to the next."""

    def __init__(self, seconds: float, shares: dict[str, float]) -> None:
        self.start = time.monotonic()
        self.seconds = seconds
        total = sum(shares.values())
        self.ends, acc = {}, 0.0
        for name, share in shares.items():
            acc += share / total
            self.ends[name] = acc * seconds

    def left(self, phase: str) -> float:
        return self.ends[phase] - (time.monotonic() - self.start)


@dataclass
class Sweeper:
    """What every sweep shares: inputs, clock, the current model's vision timer, budget, limits, the recorder."""

    setup: Setup
    clock: Clock
    budget: Budget
    point_cap_s: float
    reps: int
    rate_tflops: float
    record: Callable[[dict], None]
    timer: VisionTimer | None = None

    def run(self, name: str, mode: str, make_step: Callable[[int], Step], warmup: Callable[[int], Step],
            frames: list[int], flops: Callable[[int], float], growth: float) -> float:
        """Measure ``frames`` in increasing order; stop after an OOM or error, skip what the budget or the cap
        cannot fit (the next point's time is predicted as the last one's times (frames ratio) ** ``growth``).
        Returns the warm-up's seconds (kernel compilation included)."""
        setup, clock, timer = self.setup, self.clock, self.timer
        warm = min(frames)
        warm_started = time.monotonic()
        try:
            warmup(warm)()  # NOTE: compiles/autotunes the Triton kernels and warms the allocator before timing
            clock.sync()
        except Exception as e:  # noqa: BLE001 - the timed run of that point will record what goes wrong
            print(f"{name} {mode}: warm-up failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
        free(setup.device)
        warmup_s = round(time.monotonic() - warm_started, 1)
        print(f"{name} {mode}: warm-up at {warm} frames took {warmup_s} s", flush=True)
        last: tuple[int, float] | None = None
        stopped: str | None = None
        for n in sorted(frames):
            row: dict[str, Any] = {"model": name, "mode": mode, "frames": n, "video_tokens": setup.video_tokens(n)}
            if stopped:
                row["status"] = stopped
                self.record(row)
                continue
            if last is not None:
                # Cost grows at least linearly in frames (up to quadratically with full attention): predict, skip.
                predicted = last[1] * (n / last[0]) ** growth * 1.1
                if predicted > self.point_cap_s or predicted > self.budget.left(f"{name}_{mode}"):
                    stopped = "skipped: time budget"
                    row["status"] = stopped
                    self.record(row)
                    continue
            started = time.monotonic()
            try:
                step = make_step(n)
            except Exception as e:  # noqa: BLE001 - inputs that do not fit are an OOM of this point
                if not is_oom(e):
                    raise
                step = None
            # NOTE: errors are recorded, not raised: one failing point (say a kernel limit at some size) must not
            # cost the other model's and the other modes' measurements.
            result = {"status": "oom"} if step is None else measure_point(step, setup.device, timer, self.reps)
            if result["status"] == "ok":
                result.update(getattr(step, "extra", {}))  # e.g. host_bytes of an offloading step
            del step
            free(setup.device)
            row.update(result)
            if result["status"] == "ok":
                row["seconds_incl_setup"] = round(time.monotonic() - started, 2)
                model_flops = flops(n)
                row["llm_tflop"] = round(model_flops / 1e12, 3)
                seconds = row["llm_ms"] / 1e3
                row["llm_mfu"] = round(model_flops / seconds / (self.rate_tflops * 1e12), 4) if seconds > 0 else None
                last = (n, row["total_ms"] / 1e3)
            else:
                stopped = f"not run: smaller point {'out of memory' if result['status'] == 'oom' else 'failed'}"
            self.record(row)
            print(row_line(row), flush=True)
        return warmup_s


def row_line(row: dict) -> str:
    """One printed line per measured point."""
    if row.get("status") != "ok":
        return f"{row['model']:<9}{row['mode']:<13}{row['frames']:>6} frames  {row['status']} {row.get('error', '')}"
    mem = f"{row['peak_gib']:7.2f} GiB" if "peak_gib" in row else "      - GiB"
    return (f"{row['model']:<9}{row['mode']:<13}{row['frames']:>6} frames  {row['total_ms'] / 1e3:8.3f} s "
            f"(vision {row['vision_ms'] / 1e3:7.3f} s, llm {row['llm_ms'] / 1e3:7.3f} s)  {mem}")


def answer(prefill: Callable[..., Step], sweeper: Sweeper, args: argparse.Namespace, result: dict) -> None:
    """The hour-long target end to end: ``answer_frames`` (an hour at 1 fps) streamed, the question prefilled and
    ``answer_tokens`` greedy tokens decoded against the video cache; one row of mode ``answer``."""
    setup, n = sweeper.setup, args.answer_frames
    if not any(r["model"] == "vamba" and r["mode"] == "prefill" and r["frames"] == n for r in result["rows"]):
        return  # not a point of the prefill sweep
    row: dict[str, Any] = {"model": "vamba", "mode": "answer", "frames": n, "video_tokens": setup.video_tokens(n),
                           "answer_tokens": args.answer_tokens}
    done = at(result["rows"], "vamba", "prefill", n)
    if done is None:
        row["status"] = "not run: the prefill at this frame count did not run"
    # It runs after every VAMBA sweep asked for: it may use what the last of their phases left (only the phases
    # of the modes asked for exist).
    elif done["total_ms"] / 1e3 * 1.5 > max(sweeper.budget.left(f"vamba_{mode}") for mode in args.modes):
        row["status"] = "skipped: time budget"
    else:
        row.update(measure_point(prefill(n, answer_tokens=args.answer_tokens), setup.device, sweeper.timer, reps=1))
        if row["status"] == "ok":
            row["decode_ms"] = round(row["total_ms"] - done["total_ms"], 2)
            row["decode_tokens_per_s"] = round(args.answer_tokens / max(row["decode_ms"] / 1e3, 1e-9), 2)
    sweeper.record(row)
    print(row_line(row), flush=True)


def stage1(model, setup: Setup, clock: Clock, timer: VisionTimer, args: argparse.Namespace, result: dict,
           path: Path) -> None:
    """One VAMBA stage-1 step (trainable: cross-attention, Mamba-2 blocks, alpha, as ``set_trainable`` left them),
    written to its own JSON."""
    step = vamba_steps(model, setup)["stage1"]
    out = {"what": "VAMBA stage-1 training step (forward+backward, gradient checkpointing, no teacher/distillation)",
           **{key: result[key] for key in ("code_commit", "date", "device", "environment")},  # the sweep's header
           "setup": result["setup"], "frames": args.stage1_frames,
           "video_tokens": setup.video_tokens(args.stage1_frames), "text_tokens": setup.train_tokens,
           "trainable": "cross_attn, vision_mixer (Mamba-2 blocks), alpha",
           "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    try:
        step(min(64, args.stage1_frames))()  # warm the kernels of this parameter set
        clock.sync()
        out.update(measure_point(step(args.stage1_frames), setup.device, timer, args.reps))
    except Exception as e:  # noqa: BLE001 - recorded like a sweep point
        out.update({"status": "oom"} if is_oom(e) else {"status": "error", "error": f"{type(e).__name__}: {e}"[:500]})
    free(setup.device)
    atomic_write_json(path, out)
    print(f"stage-1 step, {args.stage1_frames} frames: {out.get('status')} "
          f"{out.get('total_ms', float('nan')) / 1e3:.3f} s {out.get('peak_gib', '-')} GiB", flush=True)
