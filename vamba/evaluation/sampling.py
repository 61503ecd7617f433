"""Frame indices exactly as the released VAMBA evaluation computes them, per benchmark protocol.

These are protocol facts, not decoding: a model adapter decodes the returned indices with whatever
reader it uses (decord, PyAV). The uniform sampler and the pre-resize rule live in ``vamba.data``
(``sampling.uniform_indices``, ``vision.vamba_resize_size``), shared with training.
"""
from __future__ import annotations

from vamba.data.sampling import uniform_indices
from vamba.evaluation.interface import VideoRequest


def mvbench_segment_indices(num_frames: int, fps: float, max_frame: int, start: float | None = None,
                            end: float | None = None, first_index: int = 0) -> list[int]:
    """MVBench's sampler (docs/evaluation.md, "Protocols"), shared by the official notebook and VAMBA.

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
        return uniform_indices(total_frames, settings.num_frames)
    if settings.sampling == "mvbench_segments":
        max_frame = total_frames if request.is_frame_folder else total_frames - 1
        return mvbench_segment_indices(settings.num_frames, fps, max_frame, request.start, request.end,
                                       request.first_frame_index)
    raise ValueError(f"unknown sampling mode {settings.sampling!r}")
