"""Decode a video piece by piece into Qwen2-VL patches, for the streaming prefill.

``VideoPlan`` fixes what is read: the frame indices (any sampler of ``vamba.data.sampling`` or
``vamba.evaluation.sampling``), the resize (``vamba.data.vision.VisionConfig``) and so the patch grid of
the whole video. ``plan.pieces(piece_frames)`` then decodes and patchifies ``piece_frames`` frames at a
time: one thread decodes and a few resize (bounded, a few units of frames ahead), so the host work overlaps
the model's; on a GPU the resized uint8 frames are normalised and patchified there.

Frame counts follow ``process_frames``: an odd count drops (or repeats) the last frame, one frame is an
image (duplicated). Decoding uses the data pipeline's readers: decord (random access), frame folders,
or PyAV, which is read in one forward pass over the file (its reader re-decodes from the start on
every call, which would make piecewise reading quadratic in the video's length).
"""
from __future__ import annotations

import collections
import concurrent.futures
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
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
    run_with_timeout,
)
from vamba.data.vision import PATCH_SIZE, VisionConfig, patches_from_frames, processed_size, resize_for_patches


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


def open_with_timeout(source: str | os.PathLike, backend: Backend = "auto", fallback: Backend | None = "pyav",
                      folder_fps: float = 25.0, timeout_s: float | None = None) -> tuple[VideoReader, VideoInfo]:
    """``open_reader`` and its header, within ``timeout_s`` seconds (``VideoDecodeError`` past it)."""
    def read() -> tuple[VideoReader, VideoInfo]:
        reader = open_reader(source, backend, fallback, folder_fps)
        return reader, reader.info()

    return run_with_timeout(read, timeout_s, f"opening {source}")


@dataclass
class VideoPlan:
    """What to read from one video: ``indices`` (sorted source frames, already made even), the resize, the grid."""

    source: str
    reader: VideoReader
    info: VideoInfo
    indices: list[int]
    vision: VisionConfig
    # decoding seconds left of the video's limit after opening it (None: no limit): every piece comes out of it.
    # decord hangs on some files; a read past it is a VideoDecodeError and its stuck thread is abandoned
    # (vamba.data.video's bound). limit_s: the whole limit (opening included), named in that error.
    timeout_s: float | None = None
    limit_s: float | None = None

    @classmethod
    def create(cls, source: str | os.PathLike, indices: Sequence[int] | None = None,
               sampling: FrameSampling | None = None, vision: VisionConfig | None = None,
               reader: VideoReader | None = None, backend: Backend = "auto",
               timeout_s: float | None = None, spent_s: float = 0.0) -> VideoPlan:
        """Plan a read of ``source`` at the given frame ``indices`` or by ``sampling`` (default: 16 uniform).
        ``timeout_s``: seconds the video may take to open and decode in all, of which the caller has already
        spent ``spent_s`` (opening the ``reader`` it passes)."""
        vision = vision or VisionConfig()
        started = time.perf_counter() - spent_s
        if reader is None:
            reader, info = open_with_timeout(source, backend, timeout_s=timeout_s)
        else:
            left = None if timeout_s is None else timeout_s - spent_s
            info = run_with_timeout(reader.info, left, f"reading the header of {source}", limit_s=timeout_s)
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
        left = None if timeout_s is None else timeout_s - (time.perf_counter() - started)
        return cls(str(source), reader, info, indices, vision, left, timeout_s)

    @property
    def grid(self) -> tuple[int, int, int]:
        """(t, h, w) patch grid of the whole read."""
        h, w = processed_size(self.info.height, self.info.width, self.vision)
        return len(self.indices) // 2, h // PATCH_SIZE, w // PATCH_SIZE

    @property
    def timestamps(self) -> list[float]:
        fps = self.info.fps if self.info.fps > 0 else 1.0
        return [i / fps for i in self.indices]

    def frames(self, piece_frames: int, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """uint8 [T_i, H, W, 3] frames, ``piece_frames`` (even) at a time, in order; of ``indices[start:stop]``
        (``start`` a multiple of the step: the reader calls are those of the whole read from there on)."""
        step = max(2, piece_frames + piece_frames % 2)
        indices = self.indices[start:stop]
        if start % step:
            raise ValueError(f"start={start} is not a multiple of the read's step ({step} frames)")
        if isinstance(self.reader, PyAVReader):
            if indices:
                yield from self.reader.pieces(indices, step)
            return
        for at in range(0, len(indices), step):
            yield self.reader.get_frames(indices[at:at + step])

    def pieces(self, piece_frames: int, prefetch: bool = True, workers: int = 1, device: torch.device | None = None,
               dtype: torch.dtype | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(pixel_values [P, 1176], grid_thw [1, 3])`` per piece of ``piece_frames`` frames, in order.

        ``prefetch``: the host work runs ahead of the caller on background threads (else all of it in the calling
        thread, one piece after the other: the reference the overlapped path equals exactly). One thread decodes
        (readers are sequential) in units of up to ``UNIT_FRAMES`` frames; ``workers`` threads resize the units (PIL
        releases the GIL), so a piece's resize is spread over them; at most ``2 * workers + 2`` units are in flight,
        so host memory stays flat. A decoding error surfaces here, in order, and every thread is joined before it
        propagates (also when the caller stops early). ``device``: where the resized uint8 frames are normalised and
        cut into patches (default: the host, float32, as ``process_frames``); on CUDA they travel pinned and
        asynchronously (4x fewer bytes than float32 patches) and the patches come in ``dtype``. ``self.stats``:
        seconds spent decoding and resizing (on the threads) and waiting for a piece (the caller)."""
        step = piece_step(piece_frames)
        unit = unit_frames(piece_frames)
        stats = self.stats = PieceStats()
        frames = self.frames(unit)
        cuda = device is not None and torch.device(device).type == "cuda"

        abandoned = False  # a timed-out decode still runs `frames` on its thread: it cannot be closed from here

        def decode() -> np.ndarray | None:
            nonlocal abandoned
            started = time.perf_counter()
            left = None if self.timeout_s is None else self.timeout_s - stats.decode_s
            try:
                chunk = run_with_timeout(lambda: next(frames, None), left, f"decoding {self.source}",
                                         limit_s=self.limit_s)
            except VideoDecodeError:
                abandoned = self.timeout_s is not None
                raise
            stats.add("decode_s", time.perf_counter() - started)
            if chunk is not None:
                self._check_size(chunk)
            return chunk

        def resize(chunk: np.ndarray | None) -> torch.Tensor | None:
            if chunk is None:
                return None
            started = time.perf_counter()
            out = torch.from_numpy(resize_for_patches(chunk, self.vision))
            out = out.pin_memory() if cuda else out
            stats.add("resize_s", time.perf_counter() - started)
            return out

        def patches(units: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            moved = [u.to(device, non_blocking=True) for u in units] if device is not None else units
            stats.pieces += 1
            return patches_from_frames(moved[0] if len(moved) == 1 else torch.cat(moved), dtype)

        try:
            units = _overlapped(decode, resize, workers, stats) if prefetch else _in_turn(decode, resize)
            group: list[torch.Tensor] = []
            for u in units:
                group.append(u)
                if sum(x.shape[0] for x in group) >= step:
                    yield patches(group)
                    group = []
            if group:
                yield patches(group)
        finally:
            units.close()  # joins the threads (prefetch) before the reader is closed
            if not abandoned:
                frames.close()


    def num_units(self, piece_frames: int) -> int:
        """How many units (``unit_frames``: one reader call and one resize each) the read takes."""
        return -(-len(self.indices) // unit_frames(piece_frames))

    def _check_size(self, chunk: np.ndarray) -> None:
        if chunk.shape[1:3] != (self.info.height, self.info.width):
            raise VideoDecodeError(f"{self.source}: frame size {chunk.shape[1:3]} differs from the header's "
                                   f"{(self.info.height, self.info.width)}")

    def resized(self, piece_frames: int, stats: PieceStats | None = None,
                units: tuple[int, int] | None = None) -> Iterator[torch.Tensor]:
        """The frames ``pieces`` patchifies, before patchifying: uint8 [T_i, h, w, 3] resized units (the units
        ``pieces`` reads, in order), decoded and resized in the calling thread with no time limit. What a decode
        worker process runs (``vamba.inference.prefetch``); its caller bounds the time by killing the process.
        ``stats``: adds the seconds spent decoding and resizing. ``units``: only units ``[a, b)`` of the read (one
        worker's part of a video; ``num_units`` counts them)."""
        stats = stats or PieceStats()
        unit = unit_frames(piece_frames)
        a, b = units if units is not None else (0, self.num_units(piece_frames))
        frames = self.frames(unit, a * unit, b * unit)
        while True:
            started = time.perf_counter()
            chunk = next(frames, None)
            decoded = time.perf_counter()
            stats.add("decode_s", decoded - started)
            if chunk is None:
                return
            self._check_size(chunk)
            unit = torch.from_numpy(resize_for_patches(chunk, self.vision))
            stats.add("resize_s", time.perf_counter() - decoded)
            yield unit


UNIT_FRAMES = 32  # frames decoded and resized as one unit of work by the threads of VideoPlan.pieces


def piece_step(piece_frames: int) -> int:
    """Frames per piece of the streaming prefill: ``piece_frames`` made even (at least 2)."""
    return max(2, piece_frames + piece_frames % 2)


def unit_frames(piece_frames: int) -> int:
    """Frames decoded (one reader call) and resized as one unit: the largest even divisor of the piece size up to
    ``UNIT_FRAMES``, so that units make up pieces exactly."""
    step = piece_step(piece_frames)
    return max(d for d in range(2, min(step, UNIT_FRAMES) + 1, 2) if step % d == 0)


@dataclass
class PieceStats:
    """Where a ``VideoPlan.pieces`` read spent its host time (seconds): decoding and resizing (summed over the
    threads that did it) and the caller's waits for the next piece (the host time the model could not hide)."""

    decode_s: float = 0.0
    resize_s: float = 0.0
    wait_s: float = 0.0
    pieces: int = 0
    parts: int = 1  # decode worker processes that shared the video (vamba.inference.prefetch), 1 in process
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, seconds: float) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + seconds)


@dataclass
class ReadyFrames:
    """A video decoded and resized ahead (by a decode worker process, ``vamba.inference.prefetch``): the uint8
    frames ``VideoPlan.pieces`` would have patchified, whole. ``pieces`` cuts them the same way, so the encoding is
    the same, bit for bit. ``stats``: the worker's decoding and resizing seconds and the caller's wait for it."""

    source: str
    frames: torch.Tensor  # uint8 [T, h, w, 3], T even, h and w multiples of 28
    indices: list[int]
    info: VideoInfo
    stats: PieceStats = field(default_factory=PieceStats)

    @property
    def grid(self) -> tuple[int, int, int]:
        t, h, w, _ = self.frames.shape
        return t // 2, h // PATCH_SIZE, w // PATCH_SIZE

    @property
    def timestamps(self) -> list[float]:
        fps = self.info.fps if self.info.fps > 0 else 1.0
        return [i / fps for i in self.indices]

    def pieces(self, piece_frames: int, prefetch: bool = True, workers: int = 1, device: torch.device | None = None,
               dtype: torch.dtype | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(pixel_values [P, 1176], grid_thw [1, 3])`` per piece, as ``VideoPlan.pieces`` (``prefetch`` and
        ``workers`` have nothing left to do: the frames are decoded and resized)."""
        step = piece_step(piece_frames)
        cuda = device is not None and torch.device(device).type == "cuda"
        for start in range(0, self.frames.shape[0], step):
            piece = self.frames[start:start + step]
            if device is not None:
                piece = (piece.pin_memory() if cuda else piece).to(device, non_blocking=True)
            self.stats.pieces += 1
            yield patches_from_frames(piece, dtype)


def _in_turn(decode: Callable[[], np.ndarray | None],
             resize: Callable[[np.ndarray | None], torch.Tensor | None]) -> Iterator[torch.Tensor]:
    """``resize(decode())`` unit after unit in the calling thread (the reference of ``_overlapped``)."""
    while (unit := resize(decode())) is not None:
        yield unit


def _overlapped(decode: Callable[[], np.ndarray | None], resize: Callable[[np.ndarray | None], torch.Tensor | None],
                workers: int, stats: PieceStats) -> Iterator[torch.Tensor]:
    """``resize(decode())`` unit after unit, computed ahead on threads: one decoder (called in order) and ``workers``
    resizers, at most ``2 * workers + 2`` units in flight; yields the units in order until ``decode`` returns None.
    An error of either stage is raised at its unit; on any exit the queued work is cancelled and the threads joined."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    decoder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vamba-decode")
    resizer = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="vamba-resize")
    pending: collections.deque[concurrent.futures.Future] = collections.deque()

    def submit() -> None:
        decoded = decoder.submit(decode)  # FIFO on one thread: units are decoded in order
        pending.append(resizer.submit(lambda: resize(decoded.result())))

    try:
        for _ in range(2 * workers + 2):
            submit()
        while True:
            started = time.perf_counter()
            unit = pending.popleft().result()
            stats.add("wait_s", time.perf_counter() - started)
            if unit is None:
                return
            submit()
            yield unit
    finally:
        # Cancel what has not started (a resizer waiting on a cancelled decode gets CancelledError and ends), then
        # join both pools: no thread outlives the read.
        decoder.shutdown(wait=False, cancel_futures=True)
        resizer.shutdown(wait=True, cancel_futures=True)
        decoder.shutdown(wait=True)


def folder_reader(path: str | os.PathLike, fps: float) -> FrameFolderReader:
    if not Path(path).is_dir():
        raise VideoDecodeError(f"frame folder {path} does not exist")
    return FrameFolderReader(path, fps)
