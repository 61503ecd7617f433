"""Which frames of a video to read: the released VAMBA uniform sampler, fixed-fps and random segments, and the
released *training* samplers of its data configs (``released_middle``, ``released_rand``, ``released_fps``:
``vamba.data.released_sampling``).

Every sampler maps a video's length (``total_frames``, its average ``fps``) to sorted frame indices;
``sample_frames`` returns them with their timestamps in seconds (``index / fps``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from vamba.data import released_sampling

SamplingMode = Literal["uniform", "fps", "random", "released_middle", "released_rand", "released_fps"]
SAMPLING_MODES = ("uniform", "fps", "random", "released_middle", "released_rand", "released_fps")


class VideoHeaderError(ValueError):
    """A video's header gives a frame count or frame rate that no sampling can use (0 frames, fps 0 or NaN): a
    property of the file, so the data pipeline turns it into a counted skip naming the file."""


def uniform_indices(total_frames: int, num_frames: int) -> list[int]:
    """The released VAMBA evaluation sampler: midpoints of ``num_frames`` equal segments.

    Segment boundaries are an *integer* ``torch.linspace(0, total_frames, num_frames + 1)`` and the index
    of segment i is ``(b_i + b_{i+1}) // 2``; a video with at most ``num_frames`` frames gives all of them.
    Kept on torch (not numpy) so the integer boundaries are bit-identical to the official scripts.
    """
    if total_frames <= 0:
        raise VideoHeaderError(f"a video needs at least one frame, got total_frames={total_frames}")
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if num_frames >= total_frames:
        return list(range(total_frames))
    bounds = torch.linspace(0, total_frames, num_frames + 1, dtype=torch.int64)
    return ((bounds[:-1] + bounds[1:]) // 2).tolist()


def fps_indices(total_frames: int, video_fps: float, target_fps: float, max_frames: int | None = None) -> list[int]:
    """Frames at ``target_fps`` (one every ``video_fps / target_fps`` frames, rounded), at most ``max_frames``.

    When the video is long enough to exceed ``max_frames`` the count is capped by sampling ``max_frames``
    uniformly instead (NOTE: the official scripts truncate to the first ``max_frames``, which silently drops
    the end of the video; a cap that keeps the whole video in view is what a long-video model needs).
    """
    if total_frames <= 0:
        raise VideoHeaderError(f"a video needs at least one frame, got total_frames={total_frames}")
    if target_fps <= 0:
        raise ValueError(f"target fps must be positive, got {target_fps}")
    # NaN (decord's average fps of a stream whose frame durations are 0) fails every comparison: test finiteness.
    if not math.isfinite(video_fps) or video_fps <= 0:
        raise VideoHeaderError(f"the video's header gives fps={video_fps}: cannot sample {target_fps} frames a second")
    # One index every `step` frames; a step under one frame reads every frame (rounding k * step for k = 0, 1, ...
    # hits every integer when the step is at most 1), so it is never materialised at more than one per frame.
    step = max(video_fps / target_fps, 1.0)
    # At least ceil(total / step) - 1 distinct indices come out (with step >= 1 rounding keeps them distinct), so a
    # count past the cap is known without allocating total_frames / step indices from an untrusted header.
    if max_frames is not None and total_frames / step - 1 > max_frames:
        return uniform_indices(total_frames, max_frames)
    indices = torch.arange(0, total_frames, step, dtype=torch.float64).round().long()
    indices = torch.unique(indices[indices < total_frames]).tolist()  # sorted
    if max_frames is not None and len(indices) > max_frames:
        return uniform_indices(total_frames, max_frames)
    return indices


def random_indices(total_frames: int, num_frames: int, generator: torch.Generator) -> list[int]:
    """Training sampler: one random frame inside each of ``num_frames`` equal segments (TSN-style).

    Segments are the same integer linspace as ``uniform_indices``; with fewer frames than segments every
    frame is returned. Deterministic given ``generator``.
    """
    if total_frames <= 0:
        raise VideoHeaderError(f"a video needs at least one frame, got total_frames={total_frames}")
    if num_frames >= total_frames:
        return list(range(total_frames))
    bounds = torch.linspace(0, total_frames, num_frames + 1, dtype=torch.int64)
    widths = (bounds[1:] - bounds[:-1]).clamp(min=1)
    offsets = (torch.rand(num_frames, generator=generator, dtype=torch.float64) * widths).long()
    return (bounds[:-1] + offsets.clamp(max=widths - 1)).tolist()


def frames_for_token_budget(video_tokens: int, height: int, width: int, patch_size: int = 14,
                            merge_size: int = 2, temporal_patch_size: int = 2) -> int:
    """Largest even frame count whose video tokens fit ``video_tokens`` at a processed size ``height x width``.

    One temporal patch (``temporal_patch_size`` frames) of an ``H x W`` frame gives
    ``(H / patch_size) * (W / patch_size) / merge_size**2`` tokens in the video stream (after the 2x2 merger).
    ``height`` and ``width`` are the sizes after resizing (multiples of ``patch_size * merge_size``).
    """
    unit = patch_size * merge_size
    if height % unit or width % unit:
        raise ValueError(f"processed size must be a multiple of {unit}, got {height}x{width}")
    tokens_per_step = (height // unit) * (width // unit)
    steps = video_tokens // tokens_per_step
    if steps < 1:
        raise ValueError(f"a budget of {video_tokens} video tokens is smaller than one temporal patch "
                         f"({tokens_per_step} tokens at {height}x{width})")
    return steps * temporal_patch_size


@dataclass
class FrameSampling:
    """How to pick frames. ``mode``: ``uniform`` (VAMBA eval), ``fps`` (``fps`` with cap ``num_frames``),
    ``random`` (segment-random, training). ``num_frames`` is the count (uniform/random) or cap (fps);
    ``video_tokens`` replaces it by ``frames_for_token_budget`` of each video (see ``vamba.data.dataset``).
    ``released_*``: the released training samplers (``vamba.data.released_sampling``; ``released_fps`` uses
    ``fps`` and no cap); ``patch_budget`` is the released ``video_num_frames: auto`` (``auto_num_frames`` of
    each video at its edge-resized size replaces ``num_frames``)."""

    mode: SamplingMode = "uniform"
    num_frames: int = 16
    fps: float = 1.0
    video_tokens: int | None = None  # when set: num_frames per video from this budget at its processed size
    patch_budget: int | None = None  # released `auto`: num_frames per video from this many encoder patches

    def __post_init__(self) -> None:
        if self.mode not in SAMPLING_MODES:
            raise ValueError(f"unknown frame sampling mode {self.mode!r}; expected one of {', '.join(SAMPLING_MODES)}")
        if self.num_frames <= 0:
            raise ValueError(f"num_frames must be positive, got {self.num_frames}")


@dataclass
class SampledFrames:
    """Chosen frame indices (sorted) and their timestamps in seconds."""

    indices: list[int]
    timestamps: list[float] = field(default_factory=list)


def sample_frames(total_frames: int, video_fps: float, sampling: FrameSampling,
                  generator: torch.Generator | None = None) -> SampledFrames:
    """Apply ``sampling`` to a video of ``total_frames`` frames at ``video_fps``."""
    if sampling.mode == "uniform":
        indices = uniform_indices(total_frames, sampling.num_frames)
    elif sampling.mode == "fps":
        indices = fps_indices(total_frames, video_fps, sampling.fps, sampling.num_frames)
    elif sampling.mode == "released_middle":
        indices = released_sampling.middle_indices(total_frames, sampling.num_frames)
    elif sampling.mode == "released_fps":
        indices = released_sampling.fps_indices(total_frames, video_fps, sampling.fps)
    else:
        if generator is None:
            raise ValueError("random frame sampling needs a torch.Generator (for reproducibility)")
        if sampling.mode == "released_rand":
            indices = released_sampling.rand_indices(total_frames, sampling.num_frames, generator)
        else:
            indices = random_indices(total_frames, sampling.num_frames, generator)
    fps = video_fps if video_fps > 0 else 1.0
    return SampledFrames(indices, [i / fps for i in indices])
