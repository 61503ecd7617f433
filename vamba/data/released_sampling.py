"""The frame samplers of the released VAMBA *training* loader (``video_sample_type`` of its data configs).

Written from reading TIGER-AI-Lab/Vamba ``train/data.py`` (``get_frame_indices`` and the video loader that calls
it); the tests check hand-computed indices, not this code against itself. The loader first caps the frame count
at the video's length, so the released padding with the last frame never happens and is not reproduced.

- ``middle``: the video is cut at ``numpy.linspace(0, total, n + 1)`` truncated to integers; segment ``[a, b)``
  gives frame ``(a + b - 1) // 2``. Not our ``uniform`` (the released *evaluation* sampler, ``(a + b) // 2``
  over a torch integer linspace): 8 frames of 16 are 0, 2, ..., 14 here and 1, 3, ..., 15 there; with
  ``n >= total`` both give every frame.
- ``rand``: one frame drawn uniformly from ``a .. b - 2`` of each segment (the released draw never picks a
  segment's last frame). When any segment is a single frame that range is empty and the released code falls back
  to a random subset of ``n`` distinct frames of the whole video, sorted; so does this one.
- ``fps<x>`` (e.g. ``fps0.5``): frames at the centres of ``1/x``-second clips, ``round(t * video_fps)``, those
  before the end; no cap (the loader passes none).

Randomness comes from a ``torch.Generator`` that ``vamba.data.video.read_video`` seeds from the sample's
generator, which ``VambaDataset`` seeds by (seed, epoch, sample index): the same sample draws the same frames
after a resume, whatever the worker or the order (the released code used the unseeded global ``random``).
"""
from __future__ import annotations

import numpy as np
import torch


def _segments(total_frames: int, num_frames: int) -> list[tuple[int, int]]:
    """``[a, b)`` segments: ``numpy.linspace(0, total, n + 1)`` cast to int (truncation), n capped at total."""
    if total_frames <= 0:
        raise ValueError(f"a video needs at least one frame, got total_frames={total_frames}")
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    n = min(num_frames, total_frames)
    bounds = np.linspace(start=0, stop=total_frames, num=n + 1).astype(int).tolist()
    return list(zip(bounds[:-1], bounds[1:]))


def middle_indices(total_frames: int, num_frames: int) -> list[int]:
    """Released ``middle``: ``(a + b - 1) // 2`` of each segment ``[a, b)``."""
    return [(a + b - 1) // 2 for a, b in _segments(total_frames, num_frames)]


def rand_indices(total_frames: int, num_frames: int, generator: torch.Generator) -> list[int]:
    """Released ``rand``: a frame in ``[a, b - 2]`` per segment; a random sorted subset when a segment is one frame."""
    segments = _segments(total_frames, num_frames)
    if any(b - 1 <= a for a, b in segments):  # an empty draw range: the released fallback
        subset = torch.randperm(total_frames, generator=generator)[:len(segments)]
        return sorted(subset.tolist())
    return [a + int(torch.randint(0, b - 1 - a, (1,), generator=generator)) for a, b in segments]


def fps_indices(total_frames: int, video_fps: float, target_fps: float) -> list[int]:
    """Released ``fps<x>``: ``round(t * video_fps)`` for t = d/2, 3d/2, ... up to the duration (d = 1/x), < total."""
    if total_frames <= 0 or video_fps <= 0 or target_fps <= 0:
        raise ValueError(f"need frames and positive rates, got total={total_frames}, fps={video_fps}, "
                         f"target={target_fps}")
    duration = float(total_frames) / video_fps
    delta = 1 / target_fps
    seconds = np.arange(0 + delta / 2, duration + delta / 2, delta)
    return [int(i) for i in np.around(seconds * video_fps).astype(int) if i < total_frames]


def auto_num_frames(height: int, width: int, max_img_seq_len: int, patch_size: int = 14,
                    temporal_patch_size: int = 2) -> int:
    """Released ``video_num_frames: auto``: ``max_img_seq_len // ((h // 14) * (w // 14) // 2)``.

    ``height x width`` is the size after the shortest/longest-edge rule (before Qwen2-VL's smart resize). The
    budget is counted in vision-encoder patches per frame pair, i.e. rows of ``pixel_values`` before the 2x2
    merger: 120000 gives about 30000 merged video tokens. Raises ``ValueError`` when a frame pair has no whole
    patch or the budget gives no frame (the released loader failed on both, and retried another sample).
    """
    per_step = (height // patch_size) * (width // patch_size) // temporal_patch_size
    if per_step <= 0:
        raise ValueError(f"a {height}x{width} frame has no whole {patch_size}-pixel patch pair")
    frames = max_img_seq_len // per_step
    if frames <= 0:
        raise ValueError(f"max_img_seq_len={max_img_seq_len} gives no frame at {height}x{width} "
                         f"({per_step} patches per frame)")
    return frames
