"""Video readers: decord (default), PyAV (fallback / alternative) and pre-extracted frame folders.

Every reader exposes ``info()`` (frame count, fps, size, read from the container header and at most the first
frame) and ``get_frames(indices)`` -> ``uint8 [T, H, W, 3]`` RGB, upright: a stream whose display matrix asks
for a quarter turn (phones store portrait video as landscape frames plus a rotation) comes out turned, by
both backends (docs/data.md). ``read_video`` adds frame sampling, a per-video timeout and a fallback backend,
and turns every decoder failure into a ``VideoDecodeError``.
"""
from __future__ import annotations

import io
import os
import re
import sys
import threading
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from PIL import Image

from vamba.data.sampling import FrameSampling, SampledFrames, VideoHeaderError, sample_frames
from vamba.utils.logging import get_logger

Backend = Literal["decord", "pyav", "auto"]
_log = get_logger(__name__)
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # a frame folder's files


class VideoDecodeError(RuntimeError):
    """A video (or frame folder) could not be opened or decoded: missing, corrupt, truncated, empty, timed out."""


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    height: int
    width: int


class VideoReader(Protocol):
    def info(self) -> VideoInfo: ...

    def get_frames(self, indices: Sequence[int]) -> np.ndarray: ...


def _check_indices(indices: Sequence[int], num_frames: int) -> list[int]:
    indices = [int(i) for i in indices]
    if not indices:
        raise VideoDecodeError("no frame indices requested")
    if min(indices) < 0 or max(indices) >= num_frames:
        raise VideoDecodeError(f"frame index out of range [0, {num_frames}): {min(indices)}..{max(indices)}")
    return indices


class DecordReader:
    """decord ``VideoReader`` on CPU with one thread (as the released evaluation), random access by index.
    decord turns frames upright itself (a quarter-turn ``rotate`` tag or display matrix, flips ignored)."""

    def __init__(self, source: str | os.PathLike | bytes, num_threads: int = 1) -> None:
        decord = import_decord()
        src = io.BytesIO(source) if isinstance(source, bytes) else str(source)
        try:
            self._vr = decord.VideoReader(src, ctx=decord.cpu(0), num_threads=num_threads)
        except Exception as e:  # decord raises its own DECORDError / RuntimeError types
            raise VideoDecodeError(f"decord cannot open {_name(source)}: {e}") from e
        if len(self._vr) == 0:
            raise VideoDecodeError(f"{_name(source)} has no frames")
        self._source = source

    def info(self) -> VideoInfo:
        # NOTE: decord exposes no frame size; decoding the first (key) frame is the cheapest way to learn it.
        h, w = self._vr[0].shape[:2]
        return VideoInfo(len(self._vr), float(self._vr.get_avg_fps()), int(h), int(w))

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        indices = _check_indices(indices, len(self._vr))
        try:
            return self._vr.get_batch(indices).asnumpy()
        except Exception as e:
            raise VideoDecodeError(f"decord failed decoding {_name(self._source)}: {e}") from e


class PyAVReader:
    """PyAV (FFmpeg) reader: decodes forward from the start and keeps the requested frames.

    Frame ``i`` is the i-th decoded frame in presentation order, which is what decord indexes too. A long
    sparse read stops at the last requested frame. PyAV returns frames as coded; they are turned by the
    display matrix's rotation (read from the first frame's side data), as decord does.
    """

    def __init__(self, source: str | os.PathLike | bytes, thread_type: str = "AUTO") -> None:
        import av

        self._source = source
        self._thread_type = thread_type
        try:
            with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as container:
                if not container.streams.video:
                    raise VideoDecodeError(f"{_name(source)} has no video stream")
                stream = container.streams.video[0]
                num_frames = stream.frames or self._count_packets(container)
                rate = stream.average_rate or stream.guessed_rate
                fps = float(rate) if rate else 0.0
                first = next(container.decode(stream), None)
                self._turns = quarter_turns(first.rotation) if first is not None else 0
                h, w = int(stream.height), int(stream.width)
                self._info = VideoInfo(int(num_frames), fps, *((w, h) if self._turns % 2 else (h, w)))
        except VideoDecodeError:
            raise
        except Exception as e:  # av.error.* (InvalidDataError, FileNotFoundError, ...)
            raise VideoDecodeError(f"PyAV cannot open {_name(source)}: {e}") from e
        if self._info.num_frames == 0:
            raise VideoDecodeError(f"{_name(source)} has no frames")

    @staticmethod
    def _count_packets(container) -> int:
        # NOTE: some containers (e.g. webm, raw streams) carry no frame count; counting packets needs no decode.
        n = sum(1 for p in container.demux(container.streams.video[0]) if p.size)
        container.seek(0)
        return n

    def info(self) -> VideoInfo:
        return self._info

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        indices = _check_indices(indices, self._info.num_frames)
        wanted: dict[int, list[int]] = {}
        for pos, i in enumerate(indices):
            wanted.setdefault(i, []).append(pos)
        out: list[np.ndarray | None] = [None] * len(indices)
        for n, rgb in self._decoded(wanted, max(wanted)):
            for pos in wanted[n]:
                out[pos] = rgb
        missing = [indices[p] for p, f in enumerate(out) if f is None]
        if missing:
            raise VideoDecodeError(f"{_name(self._source)} is truncated: frames {missing[:5]} could not be decoded "
                                   f"(header says {self._info.num_frames})")
        return np.stack(out)

    def pieces(self, indices: Sequence[int], step: int) -> Iterator[np.ndarray]:
        """The frames at ``indices`` (sorted, repeats allowed), ``step`` at a time, from one forward decode: for a
        read in pieces (the streaming prefill), where ``get_frames`` per piece would re-decode from the start each
        time (quadratic in the video's length)."""
        indices = _check_indices(indices, self._info.num_frames)
        wanted: dict[int, int] = {}
        for i in indices:
            wanted[i] = wanted.get(i, 0) + 1
        buffer: list[np.ndarray] = []
        seen = 0
        for n, rgb in self._decoded(wanted, max(indices)):
            buffer += [rgb] * wanted[n]
            seen += wanted[n]
            while len(buffer) >= step:
                yield np.stack(buffer[:step])
                buffer = buffer[step:]
        if seen < len(indices):
            raise VideoDecodeError(f"{_name(self._source)} is truncated: {len(indices) - seen} requested frames could "
                                   "not be decoded")
        if buffer:
            yield np.stack(buffer)

    def _decoded(self, wanted: Container[int], last: int) -> Iterator[tuple[int, np.ndarray]]:
        """(index, RGB frame [H, W, 3] upright) of every frame in ``wanted``, in one forward decode that stops after
        frame ``last``; PyAV's errors (and a truncated stream's) as ``VideoDecodeError``."""
        import av

        try:
            with av.open(io.BytesIO(self._source) if isinstance(self._source, bytes) else str(self._source)) as c:
                stream = c.streams.video[0]
                stream.thread_type = self._thread_type
                for n, frame in enumerate(c.decode(stream)):
                    if n in wanted:
                        rgb = frame.to_ndarray(format="rgb24")
                        yield n, np.ascontiguousarray(np.rot90(rgb, self._turns)) if self._turns else rgb
                    if n >= last:
                        break
        except Exception as e:  # av errors, truncated streams
            raise VideoDecodeError(f"PyAV failed decoding {_name(self._source)}: {e}") from e


# Codecs whose FFmpeg decoder, told ``skip_frame=NONREF``, drops only the frames no other frame predicts from (H.264:
# nal_ref_idc 0; HEVC: sub-layer non-reference pictures), so a frame it still decodes comes out as without the skip.
SKIPPING_CODECS = frozenset({"h264", "hevc"})


class SkippingReader:
    """decord's one-thread frames (``DecordReader``), decoded in about half the time: PyAV decodes from the keyframe
    decord would seek to, but drops the non-reference frames it is not asked for (``SKIPPING_CODECS``). decord
    decodes every frame from that keyframe to the one it returns; a non-reference frame changes no other frame, so
    the returned frames are the same, bit for bit (tests/data/test_skipping_reader.py, on real files).

    decord stays the authority: its index gives the frame count, rate and keyframes, and the first frames read are
    compared with decord's own read of them. Where the codec is another, the PyAV index disagrees with decord's, the
    stream is rotated, or a compared frame differs, every read is decord's (``fast`` False, ``why`` says why).

    Frame ``i`` is the ``i``-th packet in presentation order, as decord counts. Reads in time order continue within
    a keyframe's group of pictures and seek to the next group's keyframe, as decord's do; ``get_frames`` may be
    called again and again (a read in pieces) and continues where the last call stopped."""

    CHECKED_FRAMES = 2  # of the first read: its first and last frame
    HELD_FRAMES = 32  # decoded frames kept past a read's last one (more than a decoder's reordering delay)

    def __init__(self, source: str | os.PathLike | bytes) -> None:
        self._container = None  # first: __del__ runs even when decord refuses the file below
        self._decord: DecordReader | None = DecordReader(source)
        self._source = source
        self._info = self._decord.info()
        self._num_frames = len(self._decord._vr)
        self.fast, self.why = False, ""
        self._checked = False
        try:
            self.fast, self.why = self._index()
        except Exception as e:  # PyAV cannot read what decord can: decord reads it
            self.fast, self.why = False, f"PyAV cannot index it: {e}"
        if not self.fast:
            self.close()

    def _index(self) -> tuple[bool, str]:
        import av

        self._container = av.open(io.BytesIO(self._source) if isinstance(self._source, bytes) else str(self._source))
        stream = self._container.streams.video[0]
        if stream.codec_context.name not in SKIPPING_CODECS:
            return False, f"codec {stream.codec_context.name} (skipping is exact for {sorted(SKIPPING_CODECS)})"
        packets = [(p.pts, p.is_keyframe) for p in self._container.demux(stream) if p.size and p.pts is not None]
        self._pts = sorted(pts for pts, _ in packets)
        if len(self._pts) != self._num_frames:
            return False, f"PyAV counts {len(self._pts)} frames, decord {self._num_frames}"
        self._index_of = {pts: i for i, pts in enumerate(self._pts)}
        keys = sorted(self._index_of[pts] for pts, key in packets if key)
        if keys != [int(k) for k in self._decord._vr.get_key_indices()]:
            return False, "PyAV and decord disagree on the keyframes"
        self._keys = np.asarray(keys)
        self._stream = stream
        stream.thread_type, stream.thread_count = "NONE", 1  # one core per reader, as decord's one thread
        self._container.seek(self._pts[0], stream=stream, backward=True, any_frame=False)
        first = next(self._container.decode(stream), None)
        if first is None or quarter_turns(first.rotation):
            return False, "a rotated stream (decord turns it)" if first is not None else "no frame decodes"
        self._packets = None  # set by the first seek
        # the last frame out of the decoder; pts of the packets it skipped; frames it gave after a read's last one
        self._out, self._skipped, self._held = -1, set(), {}
        return True, ""

    def info(self) -> VideoInfo:
        return self._info

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        indices = _check_indices(indices, self._num_frames)
        if self.fast:
            try:
                frames = self._decoded(indices)
            except Exception as e:  # PyAV failed where decord may not: decord's read decides
                self._fall_back(f"PyAV failed decoding it ({e})")
            else:
                if self._checked:
                    return frames
                self._checked = True
                check = sorted({0, len(indices) - 1})[:self.CHECKED_FRAMES]
                if np.array_equal(frames[check], self._decord.get_frames([indices[i] for i in check])):
                    # NOTE: decord's decoder is closed once the check passed. Left open after a seek, PyAV's later
                    # decoding in the same process grew by ~120 MB a read (decord 0.6 with PyAV 18, 2026-12-07: an
                    # hour at 640x360 in reads of 16 frames peaked at 9 GB; decode workers were killed for memory).
                    self._decord = None
                    return frames
                self._fall_back("a frame differed from decord's")
        if self._decord is None:
            self._decord = DecordReader(self._source)
        return self._decord.get_frames(indices)

    def _fall_back(self, why: str) -> None:
        self.fast, self.why = False, why
        self.close()
        _log.warning("%s: decord reads it (%s)", _name(self._source), why)

    def _seek(self, index: int) -> None:
        """Position the decoder at the keyframe of ``index``'s group of pictures (PyAV flushes the decoder)."""
        key = int(self._keys[self._group(index) - 1])
        self._container.seek(self._pts[key], stream=self._stream, backward=True, any_frame=False)
        self._packets = self._container.demux(self._stream)
        self._out, self._skipped, self._held = -1, set(), {}

    def _group(self, index: int) -> int:
        return int(np.searchsorted(self._keys, index, side="right"))

    def _decoded(self, indices: list[int]) -> np.ndarray:
        wanted = sorted(set(indices))
        wanted_pts = {self._pts[i] for i in wanted}
        last_pts = self._pts[wanted[-1]]
        got: dict[int, np.ndarray] = {}
        codec = self._stream.codec_context
        for n in [n for n in self._held if n < wanted[0]]:
            del self._held[n]
        for target in wanted:
            if target in got:
                continue
            if target in self._held:  # out of the decoder during the last read, after its last frame
                got[target] = self._held.pop(target).to_ndarray(format="rgb24")
                continue
            # As decord: go on decoding within the same group of pictures, seek to its keyframe otherwise; also seek
            # when the decoder already passed the frame (returned it, or skipped its packet for an earlier read).
            if (self._packets is None or self._group(target) != self._group(self._out) or target <= self._out
                    or self._pts[target] in self._skipped):
                self._seek(target)
            while target not in got:
                packet = next(self._packets, None)
                if packet is None:
                    raise VideoDecodeError(f"the stream ended before frame {target}")
                if packet.pts is not None:
                    # past this read's last frame nothing is skipped: the next read in time order may want it
                    skip = packet.pts not in wanted_pts and packet.pts < last_pts
                    codec.skip_frame = "NONREF" if skip else "DEFAULT"
                    if skip:
                        self._skipped.add(packet.pts)
                for frame in codec.decode(packet if packet.size else None):
                    n = self._index_of.get(frame.pts)
                    if n is None:
                        raise VideoDecodeError(f"a decoded frame's pts {frame.pts} is not in the index")
                    self._out = n
                    if frame.pts in wanted_pts and n not in got:
                        got[n] = frame.to_ndarray(format="rgb24")
                    elif n > wanted[-1] and len(self._held) < self.HELD_FRAMES:
                        self._held[n] = frame
        return np.stack([got[i] for i in indices])

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __del__(self) -> None:
        self.close()


def quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns (0-3) that show a frame upright, from a display matrix's rotation in degrees
    counter-clockwise (PyAV's ``VideoFrame.rotation``). Other angles give 0: decord applies none either."""
    turns, rest = divmod(round(rotation), 90)
    return turns % 4 if rest == 0 else 0


class FrameFolderReader:
    """A folder of pre-extracted frames (``frame_0.jpg``, ``00001.jpg``, ...), ordered by the number in the name.

    Folders carry no frame rate, so ``fps`` is given (the released evaluation assumes 25).
    """

    def __init__(self, folder: str | os.PathLike, fps: float = 25.0) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise VideoDecodeError(f"frame folder {folder} does not exist")
        files = [f for f in folder.iterdir() if f.suffix.lower() in FRAME_EXTENSIONS]
        if not files:
            raise VideoDecodeError(f"frame folder {folder} holds no images")
        self._files = sorted(files, key=_frame_number)
        self._fps = fps
        self._folder = folder

    def info(self) -> VideoInfo:
        with Image.open(self._files[0]) as im:
            w, h = im.size
        return VideoInfo(len(self._files), self._fps, h, w)

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        indices = _check_indices(indices, len(self._files))
        frames = []
        for i in indices:
            try:
                with Image.open(self._files[i]) as im:
                    frames.append(np.asarray(im.convert("RGB")))
            except Exception as e:
                raise VideoDecodeError(f"cannot read frame {self._files[i]}: {e}") from e
        if len({f.shape for f in frames}) > 1:
            raise VideoDecodeError(f"frames of {self._folder} differ in size")
        return np.stack(frames)


def _frame_number(path: Path) -> tuple[int, str]:
    numbers = re.findall(r"\d+", path.stem)
    return (int(numbers[-1]) if numbers else -1, path.name)


def _name(source: str | os.PathLike | bytes) -> str:
    return f"<{len(source)} bytes>" if isinstance(source, bytes) else str(source)


def import_decord():
    """decord, with its libraries kept out of the process's global symbol scope.

    decord 0.6 opens ``libdecord.so`` with ``RTLD_GLOBAL`` (``decord/_ffi/base.py``), which exports the libraries
    bundled in its wheel (FFmpeg 4.1, libx264, libvpx, zlib 1.2.3, xcb) to every library loaded or lazily bound
    after it. PyAV's own bundled libx264, libvpx and zlib then bound symbols to decord's copies: seen with
    ``LD_DEBUG=bindings`` (2026-12-07); afterwards ``ctypes.CDLL(None)`` resolves ``x264_encoder_open_164``. decord
    calls its library only through the ctypes handle (the wheel has no Cython modules), so it is loaded locally
    here: the first import of decord in a process must be this one for it to count (tests/conftest.py does it)."""
    if "decord" in sys.modules:
        return sys.modules["decord"]
    import ctypes

    exported = ctypes.RTLD_GLOBAL
    ctypes.RTLD_GLOBAL = ctypes.RTLD_LOCAL  # read by decord's loader at import time only
    try:
        import decord
    finally:
        ctypes.RTLD_GLOBAL = exported
    return decord


def decord_available() -> bool:
    try:
        import_decord()
    except ImportError:
        return False
    return True


def pyav_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def open_video(source: str | os.PathLike | bytes, backend: Backend = "auto", folder_fps: float = 25.0) -> VideoReader:
    """A reader for a video file, in-memory video bytes or a frame folder.

    ``auto`` picks decord's frames when decord is installed (it only ships x86_64 wheels), read by
    ``SkippingReader`` when PyAV is installed too; PyAV otherwise.
    """
    if not isinstance(source, bytes):
        path = Path(source)
        if path.is_dir():
            return FrameFolderReader(path, folder_fps)
        if not path.exists():
            raise VideoDecodeError(f"video {path} does not exist")
        if path.stat().st_size == 0:
            raise VideoDecodeError(f"video {path} is an empty file")
    if backend == "auto":
        if decord_available() and pyav_available():
            return SkippingReader(source)  # decord's frames in about half the time
        backend = "decord" if decord_available() else "pyav"
    if backend == "decord":
        return DecordReader(source)
    if backend == "pyav":
        return PyAVReader(source)
    raise ValueError(f"unknown video backend {backend!r}; expected decord, pyav or auto")


@dataclass
class DecodedVideo:
    """Sampled frames ``uint8 [T, H, W, 3]``, their indices/timestamps, and the source video's info."""

    frames: np.ndarray
    sampled: SampledFrames
    info: VideoInfo
    backend: str


@dataclass
class VideoReadConfig:
    """``backend``: decord | pyav | auto; ``fallback``: backend tried when the first fails (None: none);
    ``timeout_s``: per-video limit (decord hangs on some files); ``folder_fps``: fps of frame folders."""

    backend: Backend = "auto"
    fallback: Backend | None = "pyav"
    timeout_s: float | None = 60.0
    folder_fps: float = 25.0
    # Caps on what an untrusted header may claim, checked before frames are decoded (None: no cap): the frame count
    # (10 million: 92 hours at 30 fps) and a frame's pixels (8K UHD), also applied to images by vamba.data.dataset.
    max_frames: int | None = 10_000_000
    max_frame_pixels: int | None = 7680 * 4320


def check_header(info: VideoInfo, source: str | os.PathLike | bytes, config: VideoReadConfig) -> VideoInfo:
    """``info`` if it is within ``config``'s caps, else ``VideoDecodeError`` naming the file and the cap."""
    if config.max_frames is not None and info.num_frames > config.max_frames:
        raise VideoDecodeError(f"{_name(source)}: its header gives {info.num_frames} frames (max_frames="
                               f"{config.max_frames})")
    if config.max_frame_pixels is not None and info.height * info.width > config.max_frame_pixels:
        raise VideoDecodeError(f"{_name(source)}: its header gives {info.height}x{info.width} frames "
                               f"(max_frame_pixels={config.max_frame_pixels})")
    return info


class DecoderExhaustedError(RuntimeError):
    """Too many decoder threads are stuck (``MAX_ABANDONED_DECODERS``): each holds a decoder and its memory until
    the process ends, so the run stops rather than leak one more per bad file. Not a bad-sample error."""


# Decoder threads abandoned after a timeout and still running. A stuck decoder cannot be killed from Python; the
# bound keeps a data set full of hanging files from piling up threads (and their buffers) without limit.
MAX_ABANDONED_DECODERS = 8
_abandoned: list[threading.Thread] = []
_abandoned_lock = threading.Lock()


def abandoned_decoders() -> int:
    """Decoder threads that timed out and are still running in this process."""
    with _abandoned_lock:
        _abandoned[:] = [t for t in _abandoned if t.is_alive()]
        return len(_abandoned)


def run_with_timeout(fn, timeout_s: float | None, what: str = "decoding", limit_s: float | None = None):
    """``fn()`` in a daemon thread, abandoned after ``timeout_s`` seconds (``VideoDecodeError``). ``limit_s``: the
    whole limit of which ``timeout_s`` is what is left (named in the error instead; vamba.inference.video).

    NOTE: a decoder stuck in C code cannot be killed from Python, so a timed-out read leaves its thread
    behind and the caller moves on (the sample is skipped and counted). A daemon thread per read (not a
    pool) so that a stuck one neither blocks later reads nor the interpreter's exit, and nothing stale is
    inherited by forked DataLoader workers. Once ``MAX_ABANDONED_DECODERS`` are stuck, ``DecoderExhaustedError``.
    """
    if timeout_s is None:
        return fn()
    limit = f"{what} took longer than {timeout_s} s" if limit_s is None else \
        f"{what} took longer than what was left of the video's {limit_s} s limit (opening included)"
    if timeout_s <= 0:  # a budget already spent (vamba.inference.video): no thread to abandon
        raise VideoDecodeError(limit)
    if abandoned_decoders() >= MAX_ABANDONED_DECODERS:
        raise DecoderExhaustedError(f"{MAX_ABANDONED_DECODERS} decoder threads are stuck after timeouts; refusing to "
                                    "start another (restart the process; find the files in the skipped-sample log)")
    result: dict = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 (re-raised in the caller's thread)
            result["error"] = e

    thread = threading.Thread(target=target, name="vamba-decode", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        with _abandoned_lock:
            _abandoned.append(thread)
        raise VideoDecodeError(limit)
    if "error" in result:
        raise result["error"]
    return result["value"]


def draw_seed(generator: torch.Generator | None) -> int | None:
    """The one draw ``read_video`` takes from its generator (a caller that skips a video takes it too, so that the
    videos after it sample the same frames)."""
    return None if generator is None else int(torch.randint(0, 2**62, (1,), generator=generator))


def read_video(source: str | os.PathLike | bytes, sampling: FrameSampling, config: VideoReadConfig | None = None,
               generator: torch.Generator | None = None, positions: slice | None = None) -> DecodedVideo:
    """Open, sample and decode one video, with the configured timeout and fallback backend.

    ``positions``: decode only these of the sampled frames (``sampled`` still lists all of them), e.g. one
    context-parallel rank's temporal patches (vamba.data.shard). Raises ``VideoDecodeError`` (with every
    backend's reason) when no backend could read it.
    """
    config = config or VideoReadConfig()
    is_folder = not isinstance(source, bytes) and Path(source).is_dir()
    first = config.backend if config.backend != "auto" else ("decord" if decord_available() else "pyav")
    backends = [first]
    if config.fallback and config.fallback != first and not is_folder:
        backends.append(config.fallback)
    # Fix the random draw once so a fallback reads the same frames as the first attempt would have.
    seed = draw_seed(generator)
    errors = []
    for backend in backends:
        def attempt(backend: str = backend) -> DecodedVideo:
            reader = open_video(source, backend, config.folder_fps)
            info = check_header(reader.info(), source, config)
            gen = None if seed is None else torch.Generator().manual_seed(seed)
            try:
                sampled = sample_frames(info.num_frames, info.fps, sampling, gen)
            except VideoHeaderError as e:  # e.g. fps 0 from this backend's header: the next backend may read it
                raise VideoDecodeError(f"{_name(source)}: {e}") from e
            wanted = sampled.indices if positions is None else sampled.indices[positions]
            return DecodedVideo(reader.get_frames(wanted), sampled, info, "folder" if is_folder else backend)

        try:
            return run_with_timeout(attempt, config.timeout_s)
        except VideoDecodeError as e:
            errors.append(f"{backend}: {e}")
    raise VideoDecodeError(f"cannot read {_name(source)} ({'; '.join(errors)})")


def video_info(source: str | os.PathLike | bytes, config: VideoReadConfig | None = None) -> VideoInfo:
    """Frame count, fps and size from the header, with the configured fallback backend."""
    config = config or VideoReadConfig()
    first = config.backend if config.backend != "auto" else ("decord" if decord_available() else "pyav")
    errors = []
    for backend in dict.fromkeys([first, config.fallback or first]):
        try:
            return run_with_timeout(lambda b=backend: check_header(open_video(source, b, config.folder_fps).info(),
                                                                   source, config), config.timeout_s)
        except VideoDecodeError as e:
            errors.append(f"{backend}: {e}")
    raise VideoDecodeError(f"cannot read {_name(source)} ({'; '.join(errors)})")
