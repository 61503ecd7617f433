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

PyTorch FSDP2 (``vamba train fsdp=...``, ``fsdp`` below; not calibrated: no multi-GPU FSDP run was measured) shards
the same three things as ZeRO-3, but keeps other dtypes: the float32 shards of *every* parameter (``model.dtype``;
frozen ones too, 4 B / world, where ZeRO-3 keeps bf16, 2 B / world), which are also the trainable ones' master
weights (Adam then adds 8 B, not 12, per trainable parameter / world), and float32 gradient shards (the reduction
runs in float32: 4 B per trainable parameter / world). While a shard unit runs, its parameters are gathered in
bf16: with ``full_shard`` two units at a time (the running one and the prefetched next; the largest unit is the
vision tower, 675 M parameters at 7B), with ``shard_grad_op`` every unit stays gathered from its forward to its
backward (the whole model in bf16 at the peak, as without sharding).

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
VISION_TOWER_7B = 675_000_000  # Qwen2-VL's vision tower with its merger: the largest FSDP unit (vamba.training.run)
FSDP_MODES = ("full_shard", "shard_grad_op")

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
                 offload: bool = False, zero_stage: int = 0, world: int = 1, fsdp: str | None = None) -> float:
        """Peak GiB of one rank: ``video_tokens`` of the whole sample, ``cp`` ranks sharing it, ``mode`` one of
        train / train_shared / stage1; ``zero_stage`` 0 (no optimizer: the benchmark step) or 2 / 3 with
        DeepSpeed over ``world`` ranks (gradients and Adam states partitioned; ZeRO-3 also the weights), or
        ``fsdp`` (``full_shard`` / ``shard_grad_op``) with FSDP2 over ``world`` ranks (module docstring)."""
        t = video_tokens / cp
        trainable = TRAINABLE_7B[mode] if trainable is None else trainable
        grads = 2 * trainable / (world if zero_stage >= 2 else 1)
        optimizer = 12 * trainable / world if zero_stage else 0.0
        weights = self.weights_gib * GIB / (world if zero_stage >= 3 else 1)
        if fsdp is not None:
            if fsdp not in FSDP_MODES or zero_stage:
                raise ValueError(f"fsdp={fsdp!r}: one of {FSDP_MODES}, without zero_stage")
            grads, optimizer = 4 * trainable / world, 8 * trainable / world
            gathered = self.weights_gib * GIB if fsdp == "shard_grad_op" else 2 * 2 * VISION_TOWER_7B
            weights = 2 * self.weights_gib * GIB / world + gathered
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
