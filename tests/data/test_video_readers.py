from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vamba.data.sampling import FrameSampling, uniform_indices
from vamba.data.synth import write_mp4
from vamba.data.video import (
    FrameFolderReader,
    VideoDecodeError,
    VideoReadConfig,
    open_video,
    read_video,
    run_with_timeout,
    video_info,
)


def _gradient_video(num_frames: int = 20, h: int = 48, w: int = 64) -> np.ndarray:
    """Frames whose brightness encodes their index, so a wrong index is visible."""
    frames = np.zeros((num_frames, h, w, 3), dtype=np.uint8)
    for i in range(num_frames):
        frames[i] = 10 * i + 5
    return frames


@pytest.fixture(scope="module")
def indexed_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "indexed.mp4"
    write_mp4(path, _gradient_video(), fps=10)
    return path


def test_decord_and_pyav_agree_on_generated_video(video_path: Path) -> None:
    dec, pyav = open_video(video_path, "decord"), open_video(video_path, "pyav")
    assert dec.info() == pyav.info()
    info = dec.info()
    assert info.num_frames >= 16 and info.fps == 8.0 and (info.height, info.width) == (64, 64)
    idx = uniform_indices(info.num_frames, 7)
    a, b = dec.get_frames(idx), pyav.get_frames(idx)
    assert a.shape == (7, 64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_frames_come_back_in_requested_order(indexed_video: Path, backend: str) -> None:
    frames = open_video(indexed_video, backend).get_frames([7, 2, 2, 15])
    brightness = frames.reshape(4, -1).mean(1)
    np.testing.assert_allclose(brightness, [75, 25, 25, 155], atol=3)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_bytes_source(video_path: Path, backend: str) -> None:
    from_bytes = open_video(video_path.read_bytes(), backend).get_frames([0, 5])
    np.testing.assert_array_equal(from_bytes, open_video(video_path, backend).get_frames([0, 5]))


def test_frame_folder_reader(tmp_path: Path, indexed_video: Path) -> None:
    frames = open_video(indexed_video, "pyav").get_frames(range(12))
    for i, f in enumerate(frames):  # numbers are not zero-padded: order must be numeric, not lexical
        Image.fromarray(f).save(tmp_path / f"frame_{i}.png")
    reader = open_video(tmp_path)
    assert isinstance(reader, FrameFolderReader) and reader.info().num_frames == 12 and reader.info().fps == 25.0
    np.testing.assert_array_equal(reader.get_frames([2, 10, 11]), frames[[2, 10, 11]])
    out = read_video(tmp_path, FrameSampling("uniform", 4))
    assert out.sampled.indices == uniform_indices(12, 4) and out.backend == "folder"


def test_read_video_returns_indices_and_timestamps(video_path: Path) -> None:
    out = read_video(video_path, FrameSampling("uniform", 4), VideoReadConfig(backend="pyav"))
    assert out.frames.shape[0] == 4 and out.backend == "pyav"
    assert out.sampled.timestamps == [i / 8.0 for i in out.sampled.indices]


def test_random_sampling_is_reproducible_across_backends(video_path: Path) -> None:
    import torch

    cfg = FrameSampling("random", 5)
    a = read_video(video_path, cfg, VideoReadConfig(backend="decord"), torch.Generator().manual_seed(3))
    b = read_video(video_path, cfg, VideoReadConfig(backend="pyav"), torch.Generator().manual_seed(3))
    assert a.sampled.indices == b.sampled.indices
    np.testing.assert_array_equal(a.frames, b.frames)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_bad_files_raise_clear_errors(tmp_path: Path, video_path: Path, backend: str) -> None:
    with pytest.raises(VideoDecodeError, match="does not exist"):
        open_video(tmp_path / "missing.mp4", backend)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty file"):
        open_video(tmp_path / "empty.mp4", backend)
    (tmp_path / "garbage.mp4").write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoDecodeError):
        open_video(tmp_path / "garbage.mp4", backend)
    with pytest.raises(VideoDecodeError, match="out of range"):
        open_video(video_path, backend).get_frames([0, 10_000])


def test_truncated_video_fails_with_every_backend(tmp_path: Path, video_path: Path) -> None:
    data = video_path.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoDecodeError, match="cannot read"):
        read_video(tmp_path / "cut.mp4", FrameSampling("uniform", 8), VideoReadConfig(backend="decord"))


def test_truncated_streamed_video_is_detected_not_padded(tmp_path: Path) -> None:
    # With the index first, a cut file still opens and announces all its frames; the missing ones must be an
    # error, never silently fewer frames.
    write_mp4(tmp_path / "full.mp4", np.random.default_rng(0).integers(0, 255, (40, 64, 64, 3), np.uint8), 8,
              faststart=True)
    data = (tmp_path / "full.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    reader = open_video(tmp_path / "cut.mp4", "pyav")
    assert reader.info().num_frames == 40
    with pytest.raises(VideoDecodeError, match="truncated"):
        reader.get_frames(range(40))
    with pytest.raises(VideoDecodeError, match="decord: .*pyav: .*truncated"):
        read_video(tmp_path / "cut.mp4", FrameSampling("uniform", 40), VideoReadConfig(backend="decord"))


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_zero_frame_video(tmp_path: Path, backend: str) -> None:
    import av

    container = av.open(str(tmp_path / "zero.mp4"), "w", format="mp4")  # a valid mp4 with no frame
    stream = container.add_stream("libx264", rate=8)
    stream.width = stream.height = 64
    stream.options = {"threads": "1"}  # NOTE: no encoder threads alive when later tests fork workers
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    with pytest.raises(VideoDecodeError):
        open_video(tmp_path / "zero.mp4", backend)


def test_empty_frame_folder(tmp_path: Path) -> None:
    with pytest.raises(VideoDecodeError, match="holds no images"):
        open_video(tmp_path)


def test_timeout_turns_a_hang_into_an_error() -> None:
    start = time.monotonic()
    with pytest.raises(VideoDecodeError, match="longer than 0.2 s"):
        run_with_timeout(lambda: time.sleep(0.6), 0.2)
    assert time.monotonic() - start < 0.5
    time.sleep(0.6)  # let the abandoned thread end before other tests run
    assert run_with_timeout(lambda: 42, 1.0) == 42  # later reads are not stuck behind the hung one
    with pytest.raises(ZeroDivisionError):  # errors surface in the caller
        run_with_timeout(lambda: 1 / 0, 1.0)


def test_video_info_falls_back(video_path: Path) -> None:
    info = video_info(video_path, VideoReadConfig(backend="decord", fallback="pyav"))
    assert info.num_frames == open_video(video_path, "pyav").info().num_frames


def _marked_frames(h: int, w: int) -> np.ndarray:
    """Frames with a white block in the top-left corner and a blue one bottom-right, brightness by index."""
    frames = np.zeros((12, h, w, 3), dtype=np.uint8)
    for i in range(12):
        frames[i, :, :, 1] = 20 * i
        frames[i, : h // 4, : w // 4] = 255
        frames[i, -h // 4:, -w // 4:, 2] = 200
    return frames


@pytest.mark.parametrize("rotation", [90, 180, -90])
def test_rotated_video_comes_out_upright_from_both_readers(tmp_path: Path, rotation: int) -> None:
    # A 64x96 (HxW) stream whose display matrix turns it by `rotation` degrees counter-clockwise, as a phone
    # stores portrait video. decord turns the frames itself; PyAV must do the same.
    source = _marked_frames(64, 96)
    write_mp4(tmp_path / "rot.mp4", source, fps=8, rotation=rotation)
    upright = np.rot90(source, rotation // 90, axes=(1, 2))  # what a player shows
    dec, pyav = open_video(tmp_path / "rot.mp4", "decord"), open_video(tmp_path / "rot.mp4", "pyav")
    assert dec.info() == pyav.info() and (pyav.info().height, pyav.info().width) == upright.shape[1:3]
    idx = [0, 5, 11]
    a, b = dec.get_frames(idx), pyav.get_frames(idx)
    np.testing.assert_array_equal(a, b)
    assert np.abs(b.astype(int) - upright[idx].astype(int)).mean() < 2  # (H.264 near-lossless)


@pytest.mark.parametrize("rotation", [0, 90])
def test_pyav_pieces_equal_get_frames(tmp_path: Path, rotation: int) -> None:
    # PyAVReader.pieces (one forward decode, read in pieces by the streaming prefill) against get_frames: the same
    # frames, upright, repeats kept, `step` at a time.
    write_mp4(tmp_path / "v.mp4", _marked_frames(64, 96), fps=8, rotation=rotation)
    reader = open_video(tmp_path / "v.mp4", "pyav")
    idx = [0, 3, 3, 5, 11]
    pieces = list(reader.pieces(idx, 2))
    assert [len(p) for p in pieces] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate(pieces), reader.get_frames(idx))


def test_fallback_reader_keeps_the_orientation(tmp_path: Path) -> None:
    # decord 0.6 turns this 48x80 stream upright (80x48) but then fails to copy the 48-pixel-wide frames (its row
    # stride), so read_video falls back to PyAV: a real fallback on a real file, which must not turn the frames
    # back to the stream's coded orientation.
    source = _marked_frames(48, 80)
    write_mp4(tmp_path / "rot.mp4", source, fps=8, rotation=90)
    out = read_video(tmp_path / "rot.mp4", FrameSampling("uniform", 4), VideoReadConfig(backend="decord"))
    assert out.backend == "pyav", "decord read this file: choose another size that makes it fail"
    assert out.frames.shape == (4, 80, 48, 3) and (out.info.height, out.info.width) == (80, 48)
    upright = np.rot90(source[out.sampled.indices], 1, axes=(1, 2))
    assert np.abs(out.frames.astype(int) - upright.astype(int)).mean() < 2


def test_decord_keeps_its_libraries_out_of_the_global_symbol_scope(video_path: Path) -> None:
    """decord loads libdecord with RTLD_GLOBAL; imported plainly, its bundled libraries (libx264, zlib, ...) serve
    every library bound after it, PyAV's included (vamba.data.video.import_decord). In fresh processes."""
    pytest.importorskip("decord")
    probe = ("import ctypes; scope = ctypes.CDLL(None); "
             "print(hasattr(scope, 'DECORDGetLastError'), hasattr(scope, 'x264_encoder_open_164'))")
    ours = f"from vamba.data.video import DecordReader; DecordReader({str(video_path)!r}).get_frames([0, 1]); {probe}"
    plain = f"import decord; {probe}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env) for code in (ours, plain)]
    assert [r.returncode for r in run] == [0, 0], run[0].stderr[-2000:] + run[1].stderr[-2000:]
    assert run[0].stdout.split() == ["False", "False"]
    assert run[1].stdout.split() == ["True", "True"]  # what the plain import does: the check above can fail
