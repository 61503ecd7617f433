"""Sizes from untrusted headers are capped before anything is allocated or decoded (issue 28 item 7)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from PIL import Image

import vamba.data.dataset as dataset_module
from vamba.data.chat import SampleError
from vamba.data.dataset import ProcessingConfig, VambaDataset
from vamba.data.formats import Source
from vamba.data.sampling import FrameSampling, fps_indices
from vamba.data.video import VideoReadConfig
from vamba.utils.io import safetensors_header


def test_fps_sampling_of_a_huge_frame_count_allocates_nothing_per_frame() -> None:
    started = time.monotonic()
    assert len(fps_indices(10**12, 30.0, 1.0, 512)) == 512  # 3e10 indices at 1 fps: never materialised
    assert time.monotonic() - started < 1


def test_a_safetensors_header_length_is_capped_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    with open(path, "wb") as f:  # a sparse 300 MB file announcing a 200 MB header
        f.write((200_000_000).to_bytes(8, "little"))
        f.truncate(300_000_000)
    with pytest.raises(ValueError, match="announces 200000000 bytes"):
        safetensors_header(path)


def _source(tmp_path: Path, synth_dir: Path) -> Source:
    Image.new("RGB", (200, 200), "blue").save(tmp_path / "big.png")
    (tmp_path / "v.mp4").write_bytes((synth_dir / "videos" / "video_00000.mp4").read_bytes())  # 64x64, >= 16 frames
    rows = [{"image": "big.png", "caption": "i"}, {"video": "v.mp4", "caption": "v"}]
    (tmp_path / "ann.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Source("s", "caption", tmp_path / "ann.jsonl")


@pytest.mark.parametrize("packed", [False, True])
def test_frame_count_and_pixel_caps_are_counted_skips(tmp_path: Path, synth_dir: Path, tokenizer,
                                                      packed: bool) -> None:
    config = ProcessingConfig(sampling=FrameSampling("uniform", 4),
                              video=VideoReadConfig(timeout_s=30, max_frames=10, max_frame_pixels=100 * 100))
    ds = VambaDataset(_source(tmp_path, synth_dir), tokenizer, config)
    if packed:
        assert ds.measure() == [None, None]
    else:
        assert ds.try_get(0) is None and ds.try_get(1) is None
    assert sum(ds.skips.counts.values()) == 2
    loose = VambaDataset(_source(tmp_path, synth_dir), tokenizer,
                         ProcessingConfig(sampling=FrameSampling("uniform", 4)))
    assert all(x is not None for x in loose.measure())


def test_max_video_tokens_is_checked_before_decoding(tmp_path: Path, synth_dir: Path, tokenizer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decode(*args, **kwargs):
        raise AssertionError("decoded a video over max_video_tokens")

    monkeypatch.setattr(dataset_module, "read_video", no_decode)
    ds = VambaDataset(_source(tmp_path, synth_dir), tokenizer,
                      ProcessingConfig(sampling=FrameSampling("uniform", 4), max_video_tokens=1, on_error="raise"))
    with pytest.raises(SampleError, match="max_video_tokens=1"):
        ds.try_get(1)


def test_training_config_sets_the_caps() -> None:
    from vamba.training.build import data_config
    from vamba.training.config import DataConfig

    video = data_config(DataConfig(mixture="x", max_source_frames=5, max_source_pixels=6), None).video
    assert (video.max_frames, video.max_frame_pixels) == (5, 6)
