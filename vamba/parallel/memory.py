"""A memory model of one VAMBA training step per GPU versus frames and context-parallel degree (docs/context_parallel.md).

With per-layer gradient checkpointing and a frozen vision tower, a step's peak on one GPU is

    peak = weights + inputs + optimizer + max(checkpoints, gradients) + work

- weights: every parameter in bf16 (all of them on every rank; /world under ZeRO-3), plus buffers;
- inputs: the rank's pixel patches (bf16), ``input_bytes`` per video token;
- optimizer: Adam's fp32 master weights and two moments of the trainable parameters (12 B each), /world under
  ZeRO (none in the benchmark step, which has no optimizer);
- checkpoints: the video stream entering each checkpointed layer, 28 x 3584 x 2 B per video token at 7B (in
  host memory with ``model.offload_checkpoints``). They are freed layer by layer in backward while parameter
  gradients (bf16, /world under ZeRO-2/3) appear layer by layer, so the two never peak together: the larger
  one counts;
- work: one layer's recomputation and backward over the rank's video tokens, per token; larger when gradients
  flow through the video stream (trainable Mamba-2 / cross-attention / vision parts: ``train``, stage 1) than
  when they do not (``train_shared``: only the weights shared with Qwen2-VL train, the video stream is constant).

With context parallelism of degree R a rank holds tokens / R video tokens; text and weights are replicated; the
exchanged Mamba-2 states and attention partials are a few MB per layer (not counted). The two per-token work
constants are fitted on two measured points (H200 capped at 79.2 GiB, 7B, 2026-12-01,
docs/results/efficiency_h200_cap80*.json); ``tests/parallel/test_memory_model.py`` checks the other points.
"""
from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
TOKENS_PER_FRAME_640x360 = 299 / 2  # merged video tokens per frame at 640x360 (644x364 after resize)

# Qwen2-VL-7B-sized VAMBA (vamba.models.presets "7b")
PARAMETERS_7B = 11_309_837_020
TRAINABLE_7B = {"train": 10_555_640_460, "train_shared": 7_615_616_512, "stage1": 2_940_023_948}
VIDEO_GRAD = {"train": True, "train_shared": False, "stage1": True}  # do gradients flow through the video stream?
LAYERS_7B, HIDDEN_7B = 28, 3584

# Measured calibration points (frames at 640x360, peak GiB): weights + inputs at the step's start (start_gib of
# the efficiency rows, 64 and 1024 frames), and one point per work constant.
START_GIB_64F, START_GIB_1024F = 21.286, 22.544
TRAIN_OFFLOAD_1024F_GIB = 60.851  # video stream differentiated, checkpoints in host memory
TRAIN_SHARED_1024F_GIB = 65.372  # video stream constant


@dataclass(frozen=True)
class MemoryModel:
    weights_gib: float
    input_bytes_per_token: float
    checkpoint_bytes_per_token: float
    work_grad_bytes_per_token: float
    work_nograd_bytes_per_token: float

    def peak_gib(self, video_tokens: float, cp: int = 1, mode: str = "train", trainable: int | None = None,
                 offload: bool = False, zero_stage: int = 0, world: int = 1) -> float:
        """Peak GiB of one rank: ``video_tokens`` of the whole sample, ``cp`` ranks sharing it, ``mode`` one of
        train / train_shared / stage1; ``zero_stage`` 0 (no optimizer: the benchmark step) or 2 / 3 with
        DeepSpeed over ``world`` ranks (gradients and Adam states partitioned; ZeRO-3 also the weights)."""
        t = video_tokens / cp
        trainable = TRAINABLE_7B[mode] if trainable is None else trainable
        grads = 2 * trainable / (world if zero_stage >= 2 else 1)
        optimizer = 12 * trainable / world if zero_stage else 0.0
        weights = self.weights_gib * GIB / (world if zero_stage >= 3 else 1)
        checkpoints = 0.0 if offload else self.checkpoint_bytes_per_token * t
        work = self.work_grad_bytes_per_token if VIDEO_GRAD[mode] else self.work_nograd_bytes_per_token
        return (weights + self.input_bytes_per_token * t + optimizer + max(checkpoints, grads) + work * t) / GIB

    def max_frames(self, budget_gib: float, cp: int = 1, mode: str = "train", tokens_per_frame: float =
                   TOKENS_PER_FRAME_640x360, margin: float = 0.1, **kw) -> int:
        """Most frames (even) whose predicted peak stays under ``budget_gib`` less ``margin`` of it."""
        limit = budget_gib * (1 - margin)
        lo, hi = 0, 2
        while self.peak_gib(hi * tokens_per_frame, cp, mode, **kw) <= limit and hi < 10**7:
            lo, hi = hi, hi * 2
        while hi - lo > 2:
            mid = (lo + hi) // 4 * 2
            if self.peak_gib(mid * tokens_per_frame, cp, mode, **kw) <= limit:
                lo = mid
            else:
                hi = mid
        return lo


def vamba_7b() -> MemoryModel:
    """The model at 7B, with its per-token work constants fitted on the calibration points above."""
    tokens_64, tokens_1024 = 64 * TOKENS_PER_FRAME_640x360, 1024 * TOKENS_PER_FRAME_640x360
    input_bytes = (START_GIB_1024F - START_GIB_64F) * GIB / (tokens_1024 - tokens_64)
    weights = START_GIB_64F - input_bytes * tokens_64 / GIB
    ckpt = LAYERS_7B * HIDDEN_7B * 2
    start = (weights * GIB + input_bytes * tokens_1024)
    grad = (TRAIN_OFFLOAD_1024F_GIB * GIB - start - 2 * TRAINABLE_7B["train"]) / tokens_1024
    nograd = (TRAIN_SHARED_1024F_GIB * GIB - start - max(ckpt * tokens_1024, 2 * TRAINABLE_7B["train_shared"])) / tokens_1024
    return MemoryModel(weights, input_bytes, ckpt, grad, nograd)
