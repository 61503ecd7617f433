"""Frame indices and pre-resize sizes exactly as the released VAMBA evaluation computes them.

These are protocol facts, not decoding: a model adapter decodes the returned indices with whatever
reader it uses (decord, PyAV) and resizes to the returned size (bicubic) before the Qwen2-VL processor.
"""
from __future__ import annotations

import torch

from vamba.evaluation.interface import VideoRequest


def uniform_midpoint_indices(num_frames: int, total_frames: int) -> list[int]:
    """VAMBA's ``uniform_indices`` (benchmarks.md sec. 1.2).

    Segment boundaries are an *integer* ``torch.linspace(0, total, n + 1)``; frame i is the floor
    midpoint of segment i. With ``num_frames >= total_frames`` every frame is taken once.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_frames >= total_frames:
        return list(range(total_frames))
    # NOTE: torch's integer linspace (not numpy's) is what the official code uses; keep torch so the
    # truncation of fractional boundaries is bit-identical.
    bounds = torch.linspace(0, total_frames, num_frames + 1, dtype=torch.int64)
    return ((bounds[:-1] + bounds[1:]) // 2).tolist()


def mvbench_segment_indices(num_frames: int, fps: float, max_frame: int, start: float | None = None,
                            end: float | None = None, first_index: int = 0) -> list[int]:
    """MVBench's sampler (benchmarks.md sec. 7.2), shared by the official notebook and VAMBA.

    :param max_frame: last valid frame index (``len(video) - 1`` for a file; the frame count for a
        1-based frame folder).
    :param start, end: optional bounds in seconds; without them the whole video is used.
    Indices repeat when ``num_frames`` exceeds the frames in range (VAMBA asks for 512).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    lo, hi = (-100000.0, 100000.0) if start is None or end is None else (start, end)
    start_idx = max(first_index, round(lo * fps))
    end_idx = min(round(hi * fps), max_frame)
    seg = (end_idx - start_idx) / num_frames
    return [int(start_idx + seg / 2 + round(seg * k)) for k in range(num_frames)]


def frame_indices(request: VideoRequest, total_frames: int, fps: float) -> list[int]:
    """Indices to decode for ``request`` from a source with ``total_frames`` frames at ``fps``."""
    settings = request.frames
    if settings.sampling == "uniform_midpoint":
        return uniform_midpoint_indices(settings.num_frames, total_frames)
    if settings.sampling == "mvbench_segments":
        max_frame = total_frames if request.is_frame_folder else total_frames - 1
        return mvbench_segment_indices(settings.num_frames, fps, max_frame, request.start, request.end,
                                       request.first_frame_index)
    raise ValueError(f"unknown sampling mode {settings.sampling!r}")


def resize_size(height: int, width: int, shortest_edge: int | None, longest_edge: int | None) -> tuple[int, int]:
    """(height, width) after VAMBA's pre-resize (``get_resize_output_image_size``, sec. 1.3).

    The longer side is capped at ``longest_edge`` (the other scaled by the aspect ratio, truncated),
    then each side is raised to at least ``shortest_edge`` - which can distort the aspect ratio
    (640x360 with longest 360 becomes 360x256): reproduced on purpose.
    """
    if shortest_edge is None and longest_edge is None:
        return height, width
    h, w = float(height), float(width)
    aspect = w / h
    if longest_edge is not None:
        if w >= h and w > longest_edge:
            w = longest_edge
            h = int(w / aspect)
        elif h > w and h > longest_edge:
            h = longest_edge
            w = int(h * aspect)
    if shortest_edge is not None:
        h, w = max(h, shortest_edge), max(w, shortest_edge)
    return int(h), int(w)
