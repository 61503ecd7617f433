"""Decode a video piece by piece into Qwen2-VL patches, for the streaming prefill.

``VideoPlan`` fixes what is read: the frame indices (any sampler of ``vamba.data.sampling`` or
``vamba.evaluation.sampling``), the resize (``vamba.data.vision.VisionConfig``) and so the patch grid of
the whole video. ``plan.pieces(piece_frames)`` then decodes and patchifies ``piece_frames`` frames at a
time, one piece ahead on a background thread so decoding overlaps the model's work. Only one piece of
frames is ever in memory.

Frame counts follow ``process_frames``: an odd count drops (or repeats) the last frame, one frame is an
image (duplicated). Decoding uses the data pipeline's readers: decord (random access), frame folders,
or PyAV, which is read in one forward pass over the file (its reader re-decodes from the start on
every call, which would make piecewise reading quadratic in the video's length).
"""
from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vamba.data.sampling import FrameSampling, sample_frames
from vamba.data.video import (
    Backend,
    FrameFolderReader,
    PyAVReader,
    VideoDecodeError,
    VideoInfo,
    VideoReader,
    open_video,
)
from vamba.data.vision import PATCH_SIZE, VisionConfig, process_frames, processed_size


def open_reader(source: str | os.PathLike, backend: Backend = "auto", fallback: Backend | None = "pyav",
                folder_fps: float = 25.0) -> VideoReader:
    """A reader for a file or frame folder, trying ``fallback`` when ``backend`` cannot open it."""
    errors = []
    for name in dict.fromkeys([backend] + ([fallback] if fallback else [])):
        try:
            return open_video(source, name, folder_fps)
        except VideoDecodeError as e:
            errors.append(f"{name}: {e}")
    raise VideoDecodeError(f"cannot open {source} ({'; '.join(errors)})")


@dataclass
class VideoPlan:
    """What to read from one video: ``indices`` (sorted source frames, already made even), the resize, the grid."""

    source: str
    reader: VideoReader
    info: VideoInfo
    indices: list[int]
    vision: VisionConfig

    @classmethod
    def create(cls, source: str | os.PathLike, indices: Sequence[int] | None = None,
               sampling: FrameSampling | None = None, vision: VisionConfig | None = None,
               reader: VideoReader | None = None, backend: Backend = "auto") -> VideoPlan:
        """Plan a read of ``source`` at the given frame ``indices`` or by ``sampling`` (default: 16 uniform)."""
        vision = vision or VisionConfig()
        reader = reader or open_reader(source, backend)
        info = reader.info()
        if indices is None:
            indices = sample_frames(info.num_frames, info.fps, sampling or FrameSampling()).indices
        indices = [int(i) for i in indices]
        if not indices:
            raise VideoDecodeError(f"{source}: no frames to read")
        if any(a > b for a, b in zip(indices, indices[1:])):
            raise ValueError(f"{source}: frame indices must be in time order (non-decreasing)")
        if len(indices) == 1:
            indices = indices * 2  # an image: one temporal patch of a repeated frame
        elif len(indices) % 2:
            indices = indices[:-1] if vision.odd_frames == "drop" else indices + indices[-1:]
        return cls(str(source), reader, info, indices, vision)

    @property
    def grid(self) -> tuple[int, int, int]:
        """(t, h, w) patch grid of the whole read."""
        h, w = processed_size(self.info.height, self.info.width, self.vision)
        return len(self.indices) // 2, h // PATCH_SIZE, w // PATCH_SIZE

    @property
    def timestamps(self) -> list[float]:
        fps = self.info.fps if self.info.fps > 0 else 1.0
        return [i / fps for i in self.indices]

    def frames(self, piece_frames: int) -> Iterator[np.ndarray]:
        """uint8 [T_i, H, W, 3] frames, ``piece_frames`` (even) at a time, in order."""
        step = max(2, piece_frames + piece_frames % 2)
        if isinstance(self.reader, PyAVReader):
            yield from _pyav_pieces(self.source, self.indices, step)
            return
        for start in range(0, len(self.indices), step):
            yield self.reader.get_frames(self.indices[start:start + step])

    def pieces(self, piece_frames: int, prefetch: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(pixel_values [P, 1176], grid_thw [1, 3])`` per piece; decoding runs one piece ahead when ``prefetch``."""
        frames = self.frames(piece_frames)

        def next_piece() -> tuple[torch.Tensor, torch.Tensor] | None:
            chunk = next(frames, None)
            if chunk is None:
                return None
            if chunk.shape[1:3] != (self.info.height, self.info.width):
                raise VideoDecodeError(f"{self.source}: frame size {chunk.shape[1:3]} differs from the header's "
                                       f"{(self.info.height, self.info.width)}")
            return process_frames(chunk, self.vision)

        if not prefetch:
            while (piece := next_piece()) is not None:
                yield piece
            return
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vamba-prefetch") as pool:
            future = pool.submit(next_piece)
            while (piece := future.result()) is not None:
                future = pool.submit(next_piece)
                yield piece


def _pyav_pieces(source: str, indices: list[int], step: int) -> Iterator[np.ndarray]:
    """One forward decode of ``source`` yielding the frames at ``indices`` (sorted, repeats allowed), ``step``
    at a time. Frame i is the i-th decoded frame in presentation order, as ``PyAVReader`` counts."""
    import av

    wanted: dict[int, int] = {}
    for i in indices:
        wanted[i] = wanted.get(i, 0) + 1
    buffer: list[np.ndarray] = []
    last = max(indices)
    seen = 0
    try:
        with av.open(str(source)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for n, frame in enumerate(container.decode(stream)):
                if n in wanted:
                    rgb = frame.to_ndarray(format="rgb24")
                    buffer += [rgb] * wanted[n]
                    seen += wanted[n]
                    while len(buffer) >= step:
                        yield np.stack(buffer[:step])
                        buffer = buffer[step:]
                if n >= last:
                    break
    except VideoDecodeError:
        raise
    except Exception as e:  # av errors, truncated streams
        raise VideoDecodeError(f"PyAV failed decoding {source}: {e}") from e
    if seen < len(indices):
        raise VideoDecodeError(f"{source} is truncated: {len(indices) - seen} requested frames could not be decoded")
    if buffer:
        yield np.stack(buffer)


def folder_reader(path: str | os.PathLike, fps: float) -> FrameFolderReader:
    if not Path(path).is_dir():
        raise VideoDecodeError(f"frame folder {path} does not exist")
    return FrameFolderReader(path, fps)
