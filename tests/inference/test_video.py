"""Piecewise decoding (decord, PyAV single pass, frame folders) gives the patches of the whole read."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vamba.data.sampling import FrameSampling, sample_frames
from vamba.data.video import VideoDecodeError, decord_available, open_video
from vamba.data.vision import VisionConfig, process_frames
from vamba.inference.video import VideoPlan, open_reader

BACKENDS = ["pyav"] + (["decord"] if decord_available() else [])


def bench_video(synth_dir: Path) -> Path:
    return synth_dir / "lvbench" / "videos" / "synth0000.mp4"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_frames, piece", [(8, 2), (9, 4), (1, 4), (12, 12)])
def test_pieces_equal_the_whole_read(synth_dir: Path, backend: str, num_frames: int, piece: int) -> None:
    path = bench_video(synth_dir)
    vision = VisionConfig(shortest_edge=56, longest_edge=84)
    plan = VideoPlan.create(path, sampling=FrameSampling("uniform", num_frames), vision=vision,
                                        reader=open_video(path, backend))
    reader = open_video(path, "pyav")
    indices = sample_frames(reader.info().num_frames, reader.info().fps, FrameSampling("uniform", num_frames)).indices
    want_pixels, want_grid = process_frames(reader.get_frames(indices), vision)
    pieces = list(plan.pieces(piece))
    assert plan.grid == tuple(want_grid[0].tolist())
    assert sum(int(g[0, 0]) for _, g in pieces) == int(want_grid[0, 0])
    assert all(g[0, 1:].tolist() == want_grid[0, 1:].tolist() for _, g in pieces)
    assert torch.equal(torch.cat([p for p, _ in pieces]), want_pixels)
    assert len(plan.timestamps) == 2 * plan.grid[0]


def test_repeat_mode_and_explicit_indices(synth_dir: Path) -> None:
    path = bench_video(synth_dir)
    plan = VideoPlan.create(path, indices=[0, 3, 5], vision=VisionConfig(odd_frames="repeat"))
    assert plan.indices == [0, 3, 5, 5]
    plan = VideoPlan.create(path, indices=[0, 3, 5])
    assert plan.indices == [0, 3]
    with pytest.raises(ValueError, match="time order"):
        VideoPlan.create(path, indices=[3, 0])


def test_frame_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (6, 56, 84, 3), dtype=np.uint8)
    for i, f in enumerate(frames, start=1):
        Image.fromarray(f).save(tmp_path / f"{i:05d}.png")
    plan = VideoPlan.create(tmp_path, indices=[0, 2, 4, 5])
    got = torch.cat([p for p, _ in plan.pieces(2, prefetch=False)])
    assert torch.equal(got, process_frames(frames[[0, 2, 4, 5]], VisionConfig())[0])


def test_truncated_and_missing_videos_are_decode_errors(synth_dir: Path, tmp_path: Path) -> None:
    data = bench_video(synth_dir).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data)
    with pytest.raises(VideoDecodeError):
        plan = VideoPlan.create(cut, indices=list(range(16)), reader=open_video(cut, "pyav"))
        cut.write_bytes(data[: len(data) // 2])  # cut after its header was read: decoding must notice
        list(plan.pieces(4))
    with pytest.raises(VideoDecodeError, match="does not exist"):
        open_reader(tmp_path / "nope.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(VideoDecodeError, match="cannot open"):
        VideoPlan.create(garbage)


def _vamba_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(("vamba-decode", "vamba-resize"))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("workers, piece", [(1, 6), (3, 4), (2, 20)])
def test_overlapped_pieces_equal_the_sequential_read(synth_dir: Path, backend: str, workers: int, piece: int) -> None:
    """Decoding on one thread and resizing on ``workers`` threads, units of frames in flight, gives exactly the
    pieces of the read done in the calling thread; every thread has ended when the read ends."""
    path = bench_video(synth_dir)
    vision = VisionConfig(shortest_edge=56, longest_edge=84)

    def read(**how) -> list[tuple[torch.Tensor, torch.Tensor]]:
        plan = VideoPlan.create(path, sampling=FrameSampling("uniform", 18), vision=vision,
                                reader=open_video(path, backend))
        return list(plan.pieces(piece, **how))

    want = read(prefetch=False)
    got = read(workers=workers)
    assert [g.tolist() for _, g in got] == [g.tolist() for _, g in want]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(got, want))
    assert sum(int(g[0, 0]) for _, g in got) == 9
    assert all(int(g[0, 0]) == piece // 2 for _, g in got[:-1])  # pieces of exactly piece_frames (units inside)
    assert _vamba_threads() == []


def test_patches_in_another_dtype_equal_the_float32_patches_cast(synth_dir: Path) -> None:
    plan = VideoPlan.create(bench_video(synth_dir), sampling=FrameSampling("uniform", 8))
    want = [p.to(torch.bfloat16) for p, _ in plan.pieces(4, prefetch=False)]
    got = [p for p, _ in plan.pieces(4, workers=2, device=torch.device("cpu"), dtype=torch.bfloat16)]
    assert all(a.dtype == torch.bfloat16 and torch.equal(a, b) for a, b in zip(got, want))
    assert plan.stats.pieces == 2 and plan.stats.decode_s > 0 and plan.stats.resize_s > 0


def test_a_decode_error_mid_read_surfaces_and_stops_every_thread(synth_dir: Path, tmp_path: Path) -> None:
    """A video that breaks part-way (frame 11 of a frame folder is not an image): the pieces before the break come
    out, then the read raises the decoder's VideoDecodeError (no hang) with no thread left running; a caller that
    stops early also leaves none."""
    frames = np.random.default_rng(0).integers(0, 255, (16, 56, 84, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"{i:05d}.png")
    (tmp_path / "00011.png").write_bytes(b"not an image")
    plan = VideoPlan.create(tmp_path, indices=list(range(16)))
    got = []
    with pytest.raises(VideoDecodeError, match="00011.png"):
        for piece in plan.pieces(2, workers=3):
            got.append(piece)
    assert len(got) == 5  # frames 0-9: the units before the broken one
    assert _vamba_threads() == []
    pieces = VideoPlan.create(bench_video(synth_dir), indices=list(range(16))).pieces(2, workers=3)
    next(pieces)
    pieces.close()  # the caller stops (an error in the model, a break): queued work is cancelled, threads joined
    assert _vamba_threads() == []
