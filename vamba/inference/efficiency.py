"""Efficiency benchmark (``vamba bench``, ``scripts/bench_efficiency.py``): VAMBA vs the Qwen2-VL transformer.

Both models at the same scale (``7b``: Qwen2-VL-7B sizes; ``2b``; ``tiny`` for CPU checks), random weights,
built directly on the device. Qwen2-VL is transformers' own ``Qwen2VLForConditionalGeneration`` (SDPA) with
one ``<|video_pad|>`` per merged video token (full self-attention over video + text); VAMBA gets the same
video in its own stream. Inputs are synthetic pixel tensors of the exact Qwen2-VL shape for ``--frame-size``
(640x360 -> smart resize 644x364 -> 1196 patches per frame pair, 299 merged tokens per 2 frames). Swept over
frame counts (64, 128, 256, ... until out of memory), per model:

- ``prefill``: video + a short question -> caches and the first token's logits (no grad). VAMBA uses its
  streaming prefill (``vamba.inference.streaming``, ``--piece-frames`` frames per piece); Qwen2-VL one forward.
- ``train``: one forward+backward with gradient checkpointing; trainable: the LLM (every parameter outside
  the vision tower; VAMBA's LLM includes its cross-attention, Mamba-2 blocks and alpha), the vision tower
  frozen; loss on the text tokens only for both (Qwen2-VL's logits are taken for the text positions only).
- ``train_offload``: VAMBA's ``train`` with each checkpointed layer's inputs kept in pinned host memory until
  backward (``model.offload_checkpoints``; ``host_bytes`` per step in the JSON); compared with Qwen2-VL's ``train``.
- one VAMBA *stage-1* step (trainable: cross-attention, Mamba-2 blocks, alpha) at ``--stage1-frames`` frames.

Per point: wall time (CUDA events; the first run of a point under 15 s only warms, then the median of 3 more
runs, or 1 more above a second; see ``measure``), the vision tower's share
(forward hooks on the tower) and the LLM's (the rest), peak allocated memory (total, and above what was
allocated before the step: weights + inputs), or ``oom``. Kernels are warmed (Triton compilation) on the
smallest point before each sweep. The VAMBA LLM's model FLOPs utilisation is given against the device's
measured bf16 matmul rate. Results are written after every point (a killed run keeps what it measured):
``efficiency_<tag>.json``, ``efficiency_stage1_<tag>.json``, plots ``efficiency_<tag>_{memory,time}.png`` and
the summary ``efficiency_<tag>.md`` (``vamba.inference.efficiency_report``).

    python scripts/bench_efficiency.py --out-dir docs/results --tag h100            # 7B on the GPU
    vamba bench --device cpu --scale tiny --frames 4 8 --out-dir /tmp/bench         # CPU check of the logic

Only torch, transformers, matplotlib and this package are imported (the GPU image has no hydra/decord/av).
"""
from __future__ import annotations

import argparse
import datetime
import functools
import gc
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vamba.doctor import environment
from vamba.inference.efficiency_report import HOUR_FRAMES, ISSUE_REFERENCE, at, write_report
from vamba.inference.streaming import VideoStream
from vamba.utils.io import atomic_write_json

PATCH = 14
UNIT = 28  # patch 14 x merge 2
PATCH_DIM = 3 * 2 * 14 * 14
GIB = 2**30
DEFAULT_FRAMES = [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
TINY_TEXT = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                 bos_token_id=1, eos_token_id=2, pad_token_id=0)
TINY_VISION = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, spatial_merge_size=2,
                   patch_size=14, temporal_patch_size=2)
TINY_MAMBA = dict(d_state=16, headdim=16, chunk_size=16, expand=2)


# -- configuration ------------------------------------------------------------------------------------------
def vamba_config(scale: str, mamba_backend: str):
    from vamba.models import VambaConfig
    from vamba.models.presets import vamba_config_for

    if scale == "tiny":
        return VambaConfig(text_config=dict(TINY_TEXT), vision_config=dict(TINY_VISION),
                           vision_mamba_mixer_config=dict(TINY_MAMBA, backend=mamba_backend))
    config = vamba_config_for(scale)
    mamba = dict(config.vision_mamba_mixer_config, backend=mamba_backend)
    return vamba_config_for(scale, vision_mamba_mixer_config=mamba)


def qwen_config(vamba_cfg):
    """transformers' Qwen2VLConfig with the same text and vision sizes (full attention over video + text)."""
    from transformers import Qwen2VLConfig

    config = Qwen2VLConfig(text_config=vamba_cfg.text_config.to_dict(), vision_config=vamba_cfg.vision_config.to_dict(),
                           tie_word_embeddings=vamba_cfg.tie_word_embeddings)
    vocab = config.text_config.vocab_size
    if config.video_token_id >= vocab:  # tiny vocabularies: keep the special ids inside the embedding table
        config.video_token_id, config.image_token_id = vocab - 1, vocab - 2
        config.vision_start_token_id, config.vision_end_token_id = vocab - 3, vocab - 4
    config._attn_implementation = "sdpa"
    return config


def build(cls, config, device: torch.device, dtype: torch.dtype):
    """Random weights created on the device in ``dtype`` (never a full-precision copy on the host)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # what transformers' _from_config(dtype=) does, on every 5.x version
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def frame_grid(width: int, height: int) -> tuple[int, int]:
    """Patch grid (h, w) of one frame after Qwen2-VL's smart resize (multiples of 28, Python round)."""
    h, w = max(UNIT, round(height / UNIT) * UNIT), max(UNIT, round(width / UNIT) * UNIT)
    return h // PATCH, w // PATCH


# -- measurement -----------------------------------------------------------------------------------------
class Clock:
    """CUDA events on a GPU (no host sync inside the measured region), perf_counter on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def ms(self, start, end) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


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


def is_oom(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's refusal (a RuntimeError)."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


def free(device: torch.device) -> None:
    """Return freed blocks to the device between points (on the CPU there is nothing to gain: skip the slow gc)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def measure(step: Callable[[], None], device: torch.device, clock: Clock, timer: VisionTimer, reps: int = 3,
            repeat_under_ms: float = 1000.0, warm_under_ms: float = 15000.0) -> dict[str, Any]:
    """Time ``step`` with peak memory. The first run pays for whatever is new at this size (Triton autotuning
    and compilation keyed on shapes, allocator growth, cuBLAS heuristics); when it took under
    ``warm_under_ms`` it only warms: ``reps`` more runs if it took under ``repeat_under_ms``, else one more, and
    the median of those is reported (``first_ms`` keeps the warm-up's time). Longer points are timed once (the
    one-off costs are then a small share). Returns total/vision/llm ms and memory in GiB, or
    ``{"status": "oom"}`` / ``{"status": "error", ...}``."""
    free(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    runs = []
    timer.take_ms()  # forget spans of earlier, untimed calls (warm-up, a failed point)
    try:
        while True:
            start = clock.mark()
            step()
            end = clock.mark()
            clock.sync()
            runs.append((clock.ms(start, end), timer.take_ms()))
            first = runs[0][0]
            wanted = 1 if first >= warm_under_ms else 1 + (reps if first < repeat_under_ms else 1)
            if len(runs) >= wanted:
                break
    except Exception as e:  # noqa: BLE001 - a point that fails is recorded; the benchmark goes on
        timer.take_ms()
        failure = {"status": "oom"} if is_oom(e) else {"status": "error", "error": f"{type(e).__name__}: {e}"[:500]}
    else:
        failure = None
    if failure is not None:
        free(device)
        return failure
    timed = runs[1:] or runs
    total, vision = sorted(timed)[len(timed) // 2]
    out = {"status": "ok", "total_ms": round(total, 2), "vision_ms": round(vision, 2),
           "llm_ms": round(total - vision, 2), "runs": len(timed), "first_ms": round(runs[0][0], 2)}
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        out.update(peak_gib=round(peak / GIB, 3), peak_above_start_gib=round((peak - before) / GIB, 3),
                   start_gib=round(before / GIB, 3), reserved_gib=round(torch.cuda.max_memory_reserved() / GIB, 3))
    free(device)
    return out


def matmul_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """Measured dense matmul rate (TFLOP/s) of the device in ``dtype``: the MFU denominator."""
    n = 8192 if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    clock = Clock(device)
    for _ in range(3):
        a @ b
    clock.sync()
    reps = 20 if device.type == "cuda" else 5
    start = clock.mark()
    for _ in range(reps):
        a @ b
    end = clock.mark()
    clock.sync()
    return 2 * n**3 * reps / (clock.ms(start, end) / 1e3) / 1e12


# -- model FLOPs --------------------------------------------------------------------------------------------
def vamba_llm_flops(config, video_tokens: int, text_tokens: int, logit_tokens: int) -> float:
    """Forward matmul FLOPs of VAMBA's LLM part (vision tower excluded) for one sample.

    Video tokens: cross-attention K/V projections in every layer, the Mamba-2 block in all but the last
    (in/out projections, depthwise conv, SSD: 4*H*P*N per token for the state path plus Q*(G*N + H*P) for the
    chunk-local quadratic part). Text tokens: self-attention q/k/v/o, cross-attention q/o, SwiGLU MLP,
    causal self-attention scores (2*N^2*D) and cross-attention over all video tokens (4*N*M*D), lm_head on the
    positions whose logits are computed.
    """
    t = config.text_config
    d, layers = t.hidden_size, t.num_hidden_layers
    kv = t.num_key_value_heads * (d // t.num_attention_heads)
    m = config.mamba_config()
    h, p, n, g, q = m.nheads, m.headdim, m.d_state, m.ngroups, m.chunk_size
    in_proj = 2 * m.d_inner + 2 * g * n + h
    mamba = 2 * d * in_proj + 2 * m.d_inner * d + 2 * m.conv_dim * m.d_conv + 4 * h * p * n + q * (g * n + h * p)
    video = video_tokens * (layers * 2 * d * 2 * kv + (layers - 1) * mamba)
    per_text = 2 * d * (2 * d + 2 * kv) + 2 * d * 2 * d + 2 * 3 * d * t.intermediate_size
    text = layers * (text_tokens * per_text + 2 * text_tokens**2 * d + 4 * text_tokens * video_tokens * d)
    return float(video + text + 2 * d * t.vocab_size * logit_tokens)


def qwen_llm_flops(config, video_tokens: int, text_tokens: int, logit_tokens: int) -> float:
    """Forward matmul FLOPs of Qwen2-VL's LLM part over video + text tokens (causal attention 2*S^2*D)."""
    t = config.text_config
    d, layers = t.hidden_size, t.num_hidden_layers
    kv = t.num_key_value_heads * (d // t.num_attention_heads)
    s = video_tokens + text_tokens
    per_token = 2 * d * (2 * d + 2 * kv) + 2 * 3 * d * t.intermediate_size
    return float(layers * (s * per_token + 2 * s**2 * d) + 2 * d * t.vocab_size * logit_tokens)


def llm_flops(name: str, config, setup: Setup, mode: str, frames: int) -> float:
    """Model FLOPs of one step's LLM part. prefill: forward. train: forward + backward (2x forward).
    train_shared (VAMBA with only Qwen2-VL's LLM weights trainable): no backward through the video stream, so
    2x the text side only. Recomputation by gradient checkpointing is not model work and is not counted."""
    count = vamba_llm_flops if name == "vamba" else qwen_llm_flops
    video = setup.video_tokens(frames)
    if mode == "prefill":
        return count(config, video, setup.question_tokens, 1)
    forward = count(config, video, setup.train_tokens, setup.train_tokens)
    if mode in ("train", "train_offload"):
        return 3 * forward
    return forward + 2 * (forward - count(config, video, 0, 0))


def set_trainable(model, name: str, mode: str) -> int:
    """requires_grad for a step kind; returns the number of trainable parameters.

    train: the LLM (everything outside the vision tower; VAMBA: with its cross-attention, Mamba-2 blocks and
    alpha, minus the last layer's Mamba-2 block, which feeds nothing). train_shared: only the weights VAMBA
    shares with Qwen2-VL's LLM. stage1: cross-attention, Mamba-2 blocks, alpha. prefill: nothing.
    """
    dead = set(model.parameters_without_effect()) if name == "vamba" else set()

    def new_module(n: str) -> bool:
        return ".cross_attn." in n or ".vision_mixer." in n or n.endswith(".alpha")

    def rule(n: str) -> bool:
        if mode == "prefill" or n in dead or n.startswith(("visual.", "model.visual.")):
            return False
        if mode == "stage1":
            return new_module(n)
        return not (mode == "train_shared" and new_module(n))

    return trainable(model, rule)


# -- the two models' steps ----------------------------------------------------------------------------------
@dataclass
class Setup:
    device: torch.device
    dtype: torch.dtype
    grid_hw: tuple[int, int]  # patches per frame (h, w)
    question_tokens: int
    train_tokens: int
    piece_frames: int

    def video_tokens(self, frames: int) -> int:
        h, w = self.grid_hw
        return frames // 2 * (h // 2) * (w // 2)

    def pixels(self, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = self.grid_hw
        grid = torch.tensor([[frames // 2, h, w]], device=self.device)
        return torch.randn(frames // 2 * h * w, PATCH_DIM, device=self.device, dtype=self.dtype), grid

    def text(self, n: int, vocab: int, avoid: int | None = None) -> torch.Tensor:
        ids = torch.randint(3, min(vocab - 5, 150000), (1, n), device=self.device)
        return ids if avoid is None else ids.masked_fill(ids == avoid, 3)


def trainable(model, names: Callable[[str], bool]) -> int:
    count = 0
    for name, p in model.named_parameters():
        p.requires_grad_(names(name))
        count += p.numel() if p.requires_grad else 0
    return count


def vamba_steps(model, setup: Setup) -> dict[str, Callable[[int], Callable[[], None]]]:
    """prefill: streaming video prefill + the question. train (and train_shared, stage-1): forward+backward."""
    vocab = model.config.text_config.vocab_size

    def prefill(frames: int, piece_frames: int | None = None, answer_tokens: int = 0) -> Callable[[], None]:
        """Streaming prefill + question; with ``answer_tokens``, also greedy-decode that many tokens."""
        piece = max(2, min(piece_frames or setup.piece_frames, frames))
        piece_pixels, piece_grid = setup.pixels(piece)  # the same piece content each time: timing only
        question = setup.text(setup.question_tokens, vocab)
        h, w = setup.grid_hw

        def run() -> None:
            model.eval()
            with torch.no_grad():
                stream = VideoStream(model, (frames // 2, h, w))
                done = 0
                while done < frames // 2:
                    t = min(piece // 2, frames // 2 - done)
                    stream.push(piece_pixels[:t * h * w], piece_grid.new_tensor([[t, h, w]]))
                    done += t
                if answer_tokens:
                    model.generate(input_ids=question, attention_mask=torch.ones_like(question),
                                   video_cache=stream.finish(), max_new_tokens=answer_tokens,
                                   min_new_tokens=answer_tokens, do_sample=False, pad_token_id=0)
                else:
                    model(input_ids=question, video_cache=stream.finish(), use_cache=True, logits_to_keep=1)

        return run

    def train(frames: int, offload: bool = False) -> Callable[[], None]:
        pixels, grid = setup.pixels(frames)
        ids = setup.text(setup.train_tokens, vocab)

        def run() -> None:
            model.train()
            model.model.offload_checkpoints = offload
            try:
                model(input_ids=ids, labels=ids, pixel_values=pixels, grid_thw=grid).loss.backward()
                if offload:
                    run.extra = {"host_bytes": model.model.offloaded_bytes}
            finally:
                model.model.offload_checkpoints = False
                model.zero_grad(set_to_none=True)

        run.extra = {}
        return run

    offload = functools.partial(train, offload=True)

    # Warm-up in two pieces: the second piece runs the kernels' continue-from-state variants (own compilation).
    return {"prefill": prefill, "train": train, "train_shared": train, "train_offload": offload, "stage1": train,
            "answer": prefill, "prefill_warmup": lambda n: prefill(n, piece_frames=max(2, n // 2 // 2 * 2)),
            "train_warmup": train, "train_shared_warmup": train, "train_offload_warmup": offload}


def qwen_steps(model, setup: Setup) -> dict[str, Callable[[int], Callable[[], None]]]:
    vocab = model.config.text_config.vocab_size
    pad = model.config.video_token_id

    def batch(frames: int, n_text: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        pixels, grid = setup.pixels(frames)
        m = setup.video_tokens(frames)
        text = setup.text(n_text, vocab, avoid=pad)
        ids = torch.cat([torch.full((1, m), pad, device=setup.device), text], dim=1)
        mm = torch.cat([torch.full((1, m), 2, device=setup.device), torch.zeros_like(text)], dim=1)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mm_token_type_ids": mm,
                "pixel_values_videos": pixels, "video_grid_thw": grid}, text

    def prefill(frames: int) -> Callable[[], None]:
        inputs, _ = batch(frames, setup.question_tokens)

        def run() -> None:
            model.eval()
            with torch.no_grad():
                model(**inputs, use_cache=True, logits_to_keep=1)

        return run

    def train(frames: int) -> Callable[[], None]:
        inputs, text = batch(frames, setup.train_tokens)

        def run() -> None:
            model.train()
            try:
                # Loss on the text tokens only, from their logits only (as VAMBA's chunked loss does).
                logits = model(**inputs, use_cache=False, logits_to_keep=text.shape[1]).logits
                loss = F.cross_entropy(logits[0, :-1].float(), text[0, 1:])
                loss.backward()
            finally:
                model.zero_grad(set_to_none=True)

        return run

    return {"prefill": prefill, "train": train, "prefill_warmup": prefill, "train_warmup": train}


# -- the sweep ------------------------------------------------------------------------------------------------
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

    def run(self, name: str, mode: str, make_step: Callable[[int], Callable[[], None]],
            warmup: Callable[[int], Callable[[], None]], frames: list[int], flops: Callable[[int], float],
            growth: float) -> float:
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
            result = {"status": "oom"} if step is None else measure(step, setup.device, clock, timer, self.reps)
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
            print(_row_line(row), flush=True)
        return warmup_s


def _row_line(row: dict) -> str:
    if row.get("status") != "ok":
        return f"{row['model']:<9}{row['mode']:<13}{row['frames']:>6} frames  {row['status']} {row.get('error', '')}"
    mem = f"{row['peak_gib']:7.2f} GiB" if "peak_gib" in row else "      - GiB"
    return (f"{row['model']:<9}{row['mode']:<13}{row['frames']:>6} frames  {row['total_ms'] / 1e3:8.3f} s "
            f"(vision {row['vision_ms'] / 1e3:7.3f} s, llm {row['llm_ms'] / 1e3:7.3f} s)  {mem}")


def code_commit() -> str | None:
    """The checkout's commit: ``VAMBA_CODE_COMMIT`` if set (the lent GPU gets a copy without .git), else git's."""
    import os
    import subprocess

    if os.environ.get("VAMBA_CODE_COMMIT"):
        return os.environ["VAMBA_CODE_COMMIT"]

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# -- main ---------------------------------------------------------------------------------------------------
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
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.report_only:
        summary = write_report(Path(args.report_only))
        print(summary[summary.index("## Goals"):])
        return 0
    from transformers import Qwen2VLForConditionalGeneration

    from vamba.models import VambaForConditionalGeneration

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[
        args.dtype or ("bfloat16" if cuda else "float32")]
    width, height = (int(x) for x in args.frame_size.lower().split("x"))
    grid_hw = frame_grid(width, height)
    frames = sorted(set(args.frames or DEFAULT_FRAMES))
    if any(n < 2 or n % 2 for n in frames):
        raise SystemExit("vamba bench: frame counts must be even and >= 2")
    device_name = torch.cuda.get_device_name(device) if cuda else "cpu"
    model_name = re.search(r"\b([A-Z]+\d{2,4})\b", device_name)  # "NVIDIA H100 80GB HBM3" -> h100
    tag = args.tag or (model_name.group(1).lower() if model_name else device.type)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    setup = Setup(device, dtype, grid_hw, args.question_tokens, args.train_tokens, args.piece_frames)
    mamba_backend = args.mamba_backend or ("fast" if cuda else "reference")
    vcfg = vamba_config(args.scale, mamba_backend)
    qcfg = qwen_config(vcfg)
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
                  "vamba_vision_attention": vcfg.vision_attention, "vamba_vision_compile": vcfg.vision_compile},
        "issue_reference_qwen2_vl_7b_h100": ISSUE_REFERENCE,
        "matmul_tflops": float(f"{matmul_tflops(device, dtype):.4g}"), "models": {}, "rows": rows}
    if cuda:
        from vamba.ops import available

        result["kernels"] = available()
    json_path = out_dir / f"efficiency_{tag}.json"

    def record(row: dict) -> None:
        rows.append(row)
        atomic_write_json(json_path, result)

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


def answer(prefill: Callable[..., Callable[[], None]], sweeper: Sweeper, args: argparse.Namespace,
           result: dict) -> None:
    """The issue's target end to end: ``--answer-frames`` (an hour at 1 fps) streamed, the question prefilled and
    ``--answer-tokens`` greedy tokens decoded against the video cache; one row of mode ``answer``."""
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
        row.update(measure(prefill(n, answer_tokens=args.answer_tokens), setup.device, sweeper.clock,
                           sweeper.timer, reps=1))
        if row["status"] == "ok":
            row["decode_ms"] = round(row["total_ms"] - done["total_ms"], 2)
            row["decode_tokens_per_s"] = round(args.answer_tokens / max(row["decode_ms"] / 1e3, 1e-9), 2)
    sweeper.record(row)
    print(_row_line(row), flush=True)


def stage1(model, setup: Setup, clock: Clock, timer: VisionTimer, args: argparse.Namespace, result: dict,
           path: Path) -> None:
    """One VAMBA stage-1 step (trainable: cross-attention, Mamba-2 blocks, alpha, as ``set_trainable`` left them);
    written to its own JSON (issue 5)."""
    step = vamba_steps(model, setup)["stage1"]
    out = {"what": "VAMBA stage-1 training step (forward+backward, gradient checkpointing, no teacher/distillation)",
           "date": result["date"], "device": result["device"], "environment": result["environment"],
           "setup": result["setup"], "frames": args.stage1_frames,
           "video_tokens": setup.video_tokens(args.stage1_frames), "text_tokens": setup.train_tokens,
           "trainable": "cross_attn, vision_mixer (Mamba-2 blocks), alpha",
           "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    try:
        step(min(64, args.stage1_frames))()  # warm the kernels of this parameter set
        clock.sync()
        out.update(measure(step(args.stage1_frames), setup.device, clock, timer, args.reps))
    except Exception as e:  # noqa: BLE001 - recorded like a sweep point
        out.update({"status": "oom"} if is_oom(e) else {"status": "error", "error": f"{type(e).__name__}: {e}"[:500]})
    free(setup.device)
    atomic_write_json(path, out)
    print(f"stage-1 step, {args.stage1_frames} frames: {out.get('status')} "
          f"{out.get('total_ms', float('nan')) / 1e3:.3f} s {out.get('peak_gib', '-')} GiB", flush=True)


if __name__ == "__main__":
    sys.exit(main())
