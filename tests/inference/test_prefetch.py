"""Videos decoded ahead by worker processes (vamba/inference/prefetch.py): the same frames and encoding as the
in-process read, a slow file skipped after the time limit with its worker killed, and no worker outliving its
parent, on real mp4 files written with PyAV and the tiny VAMBA of conftest.py."""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vamba.cli import main as vamba_main
from vamba.data.synth import write_mp4
from vamba.data.vision import VisionConfig, resize_for_patches
from vamba.evaluation.interface import FrameSettings, VideoRequest
from vamba.evaluation.sampling import frame_indices
from vamba.inference.prefetch import FramePrefetcher
from vamba.inference.video_qa import VambaVideoQA, load_video_qa_model
from vamba.models.loading import IncompatibleCheckpointError
from vamba.utils.io import read_jsonl

ROOT = Path(__file__).resolve().parents[2]


def _video(path: Path, frames: int, height: int, width: int, seed: int) -> Path:
    """A real H.264 file with B-frames and a keyframe every 16 frames (vamba.data.synth.write_mp4)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, height, width, 3)).astype(np.int16)
    moving = np.stack([np.roll(base[0], 3 * t, axis=1) for t in range(frames)])
    write_mp4(path, np.clip(moving + rng.integers(-20, 20, moving.shape), 0, 255).astype(np.uint8), 24)
    return path


def _dead(pid: int) -> bool:
    """Gone, or a zombie waiting for a reaper (it runs nothing any more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("prefetch")
    return [_video(root / "a.mp4", 40, 72, 128, 0), _video(root / "b.mp4", 33, 90, 60, 1)]


def test_workers_read_the_protocols_frames_and_encode_the_same(checkpoint: Path, videos: list[Path]) -> None:
    """The frames a worker hands over are, bit for bit, decord's one-thread read of the protocol's indices after its
    pre-resize; the video cache encoded from them equals the in-process path's."""
    decord = pytest.importorskip("decord")
    ahead = load_video_qa_model(str(checkpoint), device="cpu", dtype="float32", decode_workers=2)
    in_process = VambaVideoQA(ahead.chat, decode_workers=0)
    requests = [VideoRequest(str(v), FrameSettings(12, shortest_edge=96, longest_edge=160)) for v in videos]
    folder = videos[0].parent / "frames"  # MVBench's frame folders: 00001.jpg ..., sampled by segments
    folder.mkdir(exist_ok=True)
    for i, frame in enumerate(np.random.default_rng(2).integers(0, 255, (9, 56, 84, 3), dtype=np.uint8), start=1):
        Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=95)
    requests.append(VideoRequest(str(folder), FrameSettings(4, sampling="mvbench_segments", shortest_edge=None,
                                                            longest_edge=None),
                                 is_frame_folder=True, frame_folder_fps=3.0, first_frame_index=1))
    try:
        ahead.prefetch(requests)
        ready = ahead._prefetcher.take(requests[0])
        reader = decord.VideoReader(str(videos[0]), num_threads=1)
        indices = frame_indices(requests[0], len(reader), reader.get_avg_fps())
        vision = dataclasses.replace(ahead.chat.vision, shortest_edge=96, longest_edge=160)
        reference = resize_for_patches(reader.get_batch(indices).asnumpy(), vision)
        assert ready.indices == indices and ready.frames.shape == reference.shape
        assert torch.equal(ready.frames, torch.from_numpy(reference))
        assert ready.stats.decode_s > 0 and ready.stats.wait_s >= 0

        for request in requests[1:]:  # the second video and the frame folder, from their workers
            encoded = ahead.encode_video(request)
            expected = in_process.encode_video(request)
            assert encoded.grid == expected.grid and encoded.timestamps == expected.timestamps
            for got, want in zip(encoded.cache.keys + encoded.cache.values,
                                 expected.cache.keys + expected.cache.values):
                assert torch.equal(got, want)
            assert set(encoded.timing) == {"wait_s", "decode_s", "resize_s", "decode_parts"}
            assert encoded.timing["decode_s"] > 0
        pids = ahead._prefetcher.pids()
        assert len(pids) == 2
    finally:
        ahead.prefetch([])  # what the runner does when it ends
    assert ahead._prefetcher is None
    deadline = time.monotonic() + 10
    while not all(map(_dead, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(map(_dead, pids))


@pytest.mark.slow  # ~40 s on 2 cores: two evaluations, one of them starting decode worker processes
def test_vamba_eval_with_decode_workers_answers_the_same_and_times_each_video(checkpoint: Path, synth_dir: Path,
                                                                            tmp_path: Path) -> None:
    """``vamba eval model.decode_workers=2``: the same replies as the in-process path; an undecodable file is a
    counted skip from its worker; the status file and summary hold the timing."""
    import shutil

    root = tmp_path / "lvbench"
    shutil.copytree(synth_dir / "lvbench", root)
    (root / "videos" / "synth0001.mp4").write_bytes(b"\x00" * 1000)
    base = ["eval", "benchmark=lvbench", f"data={root}", f"model.path={checkpoint}", "model.device=cpu",
            "model.dtype=float32", "num_frames=8", "max_new_tokens=3", "progress=false"]
    assert vamba_main([*base, f"out={tmp_path / 'ahead'}", "model.decode_workers=2", "model.decode_ahead=2"]) == 0
    assert vamba_main([*base, f"out={tmp_path / 'in_process'}", "model.decode_workers=0"]) == 0
    ahead, in_process = (read_jsonl(tmp_path / name / "responses.jsonl") for name in ("ahead", "in_process"))
    assert [r["response"] for r in ahead] == [r["response"] for r in in_process] and len(ahead) == 2
    summary = json.loads((tmp_path / "ahead" / "summary.json").read_text())
    assert summary["skipped"]["questions"] == 1 and "VideoDecodeError" in summary["skipped"]["details"][0]["reason"]
    status = json.loads((tmp_path / "ahead" / "shards" / "rank0.status.json").read_text())
    rows = status["timing"]["videos"]
    assert [Path(r["video"]).name for r in rows] == ["synth0000.mp4", "synth0002.mp4"]
    assert all(r["encode_s"] > 0 and r["answer_s"] > 0 and r["decode_s"] > 0 and r["wait_s"] >= 0 for r in rows)
    assert all(type(r["decode_parts"]) is int for r in rows)  # a count of workers (8 frames: one unit, one part)
    assert status["reading"] == {"decode_timeout_s": 1800.0, "decode_workers": 2, "decode_ahead": 2,
                                 "decode_split": True}
    timing = summary["timing"]
    assert timing["videos_encoded"] == 2 and timing["questions"] == 2
    assert timing["encode_s"] == pytest.approx(sum(r["encode_s"] for r in rows), abs=0.01)
    assert 0 < timing["busy_frac"] <= 1


@pytest.mark.slow  # ~30 s on 2 cores: decode worker processes started, one killed and replaced
def test_a_slow_video_is_skipped_after_the_timeout_and_its_worker_killed(checkpoint: Path, videos: list[Path],
                                                                         tmp_path: Path) -> None:
    """A file that decodes for longer than ``decode_timeout_s`` is a ``VideoDecodeError`` naming the limit, the worker
    processes decoding its parts (the first video is split among both) are killed (a thread could not be), and the
    next video still comes from a worker."""
    pytest.importorskip("decord")
    from vamba.bench.eval_launched import make_long_video
    from vamba.data.video import VideoDecodeError

    # Twenty minutes with a keyframe every 20 s: 256 frames spread over it decode almost all of its 36,000.
    slow = make_long_video(tmp_path / "slow.mp4", 1200, 320, 180, gop_s=20, clip_s=20)["file"]
    model = load_video_qa_model(str(checkpoint), device="cpu", dtype="float32", decode_workers=2,
                                decode_timeout_s=2.0)
    requests = [VideoRequest(str(tmp_path / slow), FrameSettings(256, shortest_edge=56, longest_edge=56)),
                VideoRequest(str(videos[0]), FrameSettings(4, shortest_edge=56, longest_edge=112))]
    try:
        model.prefetch(requests)
        deadline = time.monotonic() + 120
        while len(model._prefetcher.pids()) < 2 and time.monotonic() < deadline:  # both workers started
            time.sleep(0.1)
        started = model._prefetcher.pids()
        with pytest.raises(VideoDecodeError, match=r"slow.mp4: decoding took longer than 2.0 s.*2 decode worker "
                                                   r"processes of its parts were killed"):
            model.encode_video(requests[0])
        assert all(_dead(pid) for pid in started)  # the slow video's two workers, killed
        assert model.encode_video(requests[1]).frames == 4
        while len(model._prefetcher.pids()) < 2 and time.monotonic() < deadline:  # and replaced
            time.sleep(0.1)
        assert not set(model._prefetcher.pids()) & set(started)
    finally:
        model.close()


@pytest.mark.slow  # ~20 s on 2 cores: a Python process that starts two decode workers
def test_no_worker_outlives_a_killed_parent(videos: list[Path], tmp_path: Path) -> None:
    """SIGKILL leaves the parent no chance to clean up: the kernel ends its workers (PR_SET_PDEATHSIG)."""
    script = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from vamba.data.vision import VisionConfig
from vamba.evaluation.interface import FrameSettings, VideoRequest
from vamba.inference.prefetch import FramePrefetcher
if __name__ == "__main__":
    prefetcher = FramePrefetcher(2, 2, VisionConfig(), 8)
    prefetcher.start([VideoRequest({str(videos[0])!r}, FrameSettings(4))])
    while len(prefetcher._pool) < 2 or not all(w.ready for w in prefetcher._pool):  # the workers run their loop
        time.sleep(0.1)
    print(*prefetcher.pids(), flush=True)
    time.sleep(600)
"""
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and not any(map(_dead, pids))
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 20
    while not all(map(_dead, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(map(_dead, pids))


@pytest.mark.parametrize("parts", [2, 3, 5])
def test_the_parts_of_a_video_are_its_whole_read(videos: list[Path], tmp_path: Path, parts: int) -> None:
    """A video split among workers (``decode_request`` part k of n: each part opens the file and seeks to its first
    frame) gives, joined, the whole read bit for bit, which is decord's one-thread frames of the protocol's indices
    after the pre-resize. On the test file (B-frames, a keyframe every 16 frames) and a file of long groups of
    pictures (a keyframe every 4 s), with 2-frame units, so that most parts start inside a group."""
    decord = pytest.importorskip("decord")
    from vamba.bench.eval_launched import make_long_video
    from vamba.data.vision import VisionConfig
    from vamba.inference.prefetch import decode_request, join_parts, request_vision

    long = tmp_path / make_long_video(tmp_path / "long.mp4", 60, 160, 90, gop_s=4, clip_s=8)["file"]
    for path, frames in ((videos[0], 24), (long, 40)):
        request = VideoRequest(str(path), FrameSettings(frames, shortest_edge=56, longest_edge=112))
        whole = decode_request(request, VisionConfig(), piece_frames=2)
        split = [decode_request(request, VisionConfig(), 2, k, parts) for k in range(parts)]
        assert sum(p["frames"].shape[0] for p in split) == whole["frames"].shape[0] == frames
        joined = join_parts(split)
        assert joined["indices"] == whole["indices"] and joined["info"] == whole["info"]
        assert torch.equal(joined["frames"], whole["frames"])
        reader = decord.VideoReader(str(path), num_threads=1)
        vision = request_vision(request, VisionConfig())
        assert torch.equal(whole["frames"], torch.from_numpy(resize_for_patches(
            reader.get_batch(whole["indices"]).asnumpy(), vision)))


def test_the_video_the_model_waits_for_is_split_among_idle_workers(checkpoint: Path, videos: list[Path]) -> None:
    """With nothing decoded yet, the first video goes to every worker (still starting), a part each (``decode_parts`` in its
    timing), and its encoding equals the in-process path's; with ``decode_split=False`` one worker decodes it."""
    pytest.importorskip("decord")
    model = load_video_qa_model(str(checkpoint), device="cpu", dtype="float32", decode_workers=3)
    model.chat.piece_frames = 4  # 2-frame units: 12 frames make 6, enough for 3 parts
    in_process = VambaVideoQA(model.chat, decode_workers=0)
    whole = VambaVideoQA(model.chat, decode_workers=3, decode_split=False)
    request = VideoRequest(str(videos[0]), FrameSettings(12, shortest_edge=96, longest_edge=160))
    try:
        for ahead, parts in ((model, 3), (whole, 1)):
            ahead.prefetch([request])
            encoded = ahead.encode_video(request)
            expected = in_process.encode_video(request)
            assert encoded.timing["decode_parts"] == parts and expected.timing["decode_parts"] == 1
            for got, want in zip(encoded.cache.keys + encoded.cache.values, expected.cache.keys + expected.cache.values):
                assert torch.equal(got, want)
    finally:
        model.close()
        whole.close()


def test_workers_beyond_the_look_ahead_only_when_videos_are_split(caplog: pytest.LogCaptureFixture) -> None:
    """Split, several workers share one video, so four workers serve a look-ahead of one; unsplit, only one of them
    could work: the pool is one worker and a warning names both settings."""
    pytest.importorskip("decord")
    split = FramePrefetcher(4, 1, VisionConfig(), 128)
    unsplit = FramePrefetcher(4, 1, VisionConfig(), 128, split=False)
    try:
        assert (split.workers, unsplit.workers) == (4, 1)
        assert "1 decode workers, not 4" in caplog.text and "model.decode_ahead=1" in caplog.text
    finally:
        split.close()
        unsplit.close()


def test_workers_start_while_the_weights_load(checkpoint: Path, videos: list[Path], tmp_path: Path) -> None:
    """load_video_qa_model spawns the decode workers before it loads the weights (on a GPU host their start overlaps
    the load); a load that fails leaves none behind; changed reading settings get a new pool, never stale frames."""
    pytest.importorskip("decord")
    model = load_video_qa_model(str(checkpoint), device="cpu", dtype="float32", decode_workers=2)
    try:
        early = model._prefetcher
        deadline = time.monotonic() + 30
        while len(early.pids()) < 2 and time.monotonic() < deadline:  # the dispatcher spawns them
            time.sleep(0.05)
        assert len(early.pids()) == 2  # before any prefetch
        request = VideoRequest(str(videos[0]), FrameSettings(12, shortest_edge=96, longest_edge=160))
        model.prefetch([request])
        assert model._prefetcher is early
        model.chat.piece_frames = 4
        model.prefetch([request])
        assert model._prefetcher is not early and model._prefetcher.piece_frames == 4
        assert not early.pids()
    finally:
        model.close()
    broken = tmp_path / "no_weights"
    broken.mkdir()
    for f in checkpoint.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and f.name != "model.safetensors.index.json":
            shutil.copy(f, broken / f.name)
    before = set(multiprocessing.active_children())
    with pytest.raises(IncompatibleCheckpointError, match="no model.safetensors"):
        load_video_qa_model(str(broken), device="cpu", dtype="float32", decode_workers=2)
    assert not [p for p in set(multiprocessing.active_children()) - before if p.is_alive()]
