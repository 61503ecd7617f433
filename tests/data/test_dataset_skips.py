from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from vamba.data.chat import SampleError
from vamba.data.dataset import ProcessingConfig, SampleProcessor, VambaDataset
from vamba.data.formats import Source
from vamba.data.sampling import FrameSampling
from vamba.data.video import VideoDecodeError, VideoReadConfig


@pytest.fixture()
def broken_source(tmp_path: Path, synth_dir: Path) -> Source:
    """Six caption records: good video, missing video, corrupt video, truncated video, good image, bad image."""
    good = synth_dir / "videos" / "video_00000.mp4"
    data = good.read_bytes()
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00" * 2048)
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 4])
    shutil.copy(synth_dir / "images" / "image_00000.png", tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes((tmp_path / "ok.png").read_bytes()[:40])
    records = [{"video": str(good), "caption": "good video"}, {"video": "missing.mp4", "caption": "m"},
               {"video": "corrupt.mp4", "caption": "c"}, {"video": "cut.mp4", "caption": "t"},
               {"image": "ok.png", "caption": "good image"}, {"image": "bad.png", "caption": "b"}]
    (tmp_path / "ann.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return Source("broken", "caption", tmp_path / "ann.jsonl", confine_media=False)  # the good video lies elsewhere


def _config(**kw) -> ProcessingConfig:
    return ProcessingConfig(sampling=FrameSampling("uniform", 8), video=VideoReadConfig(timeout_s=30), **kw)


def test_sample_has_batch_contract_shapes(synth_dir: Path, tokenizer) -> None:
    ds = VambaDataset(Source("v", "llava", synth_dir / "llava_video.json"), tokenizer, _config())
    s = ds[0]
    assert s.input_ids.dtype == torch.long and s.labels.shape == s.input_ids.shape
    assert s.grid_thw.tolist() == [[4, 4, 4]]  # 8 frames of 64x64 -> 56x56 -> (4, 4, 4)
    assert s.pixel_values.shape == (64, 1176) and s.num_video_tokens == 16
    assert tokenizer.convert_tokens_to_ids("<|vision_start|>") in s.input_ids.tolist()
    assert ds.processor.lengths(ds.data.get(0)) == (s.num_text_tokens, s.num_video_tokens)


def test_bad_samples_are_skipped_counted_and_replaced(broken_source: Source, tokenizer, tmp_path: Path) -> None:
    ds = VambaDataset(broken_source, tokenizer, _config(skip_log=str(tmp_path / "skips.jsonl")))
    keys = [ds[i].key for i in range(len(ds))]
    # each bad sample is replaced by the next good one, deterministically
    assert keys == ["broken:0", "broken:4", "broken:4", "broken:4", "broken:4", "broken:0"]
    assert sum(ds.skips.counts.values()) == 7  # 3 bad videos seen 3, 2, 1 times + the bad image once
    assert ds.skips.summary() == {"VideoDecodeError": 6, "SampleError": 1}
    assert "skipped 7 samples" in ds.skips.report()


def test_measure_marks_bad_samples(broken_source: Source, tokenizer) -> None:
    ds = VambaDataset(broken_source, tokenizer, _config())
    lengths = ds.measure()
    assert [x is None for x in lengths] == [False, True, True, True, False, True]  # cut mp4: index lost
    assert lengths[0] == (ds[0].num_text_tokens, ds[0].num_video_tokens)


def test_on_error_raise(broken_source: Source, tokenizer) -> None:
    ds = VambaDataset(broken_source, tokenizer, _config(on_error="raise"))
    with pytest.raises(VideoDecodeError, match="does not exist"):
        ds[1]
    with pytest.raises(SampleError, match="cannot read image"):
        ds[5]


def test_too_many_consecutive_bad_samples(tmp_path: Path, tokenizer) -> None:
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"video": f"m{i}.mp4", "caption": "x"}) + "\n"
                                              for i in range(4)))
    ds = VambaDataset(Source("gone", "caption", tmp_path / "a.jsonl"), tokenizer, _config(max_consecutive_skips=3))
    with pytest.raises(RuntimeError, match="3 consecutive bad samples"):
        ds[0]


def test_limits_skip_instead_of_truncating(synth_dir: Path, tokenizer) -> None:
    src = Source("v", "llava", synth_dir / "llava_video.json")
    proc = SampleProcessor(tokenizer, _config(max_text_tokens=10, on_error="raise"))
    with pytest.raises(SampleError, match="max_text_tokens=10"):
        proc(src.get(0))
    proc = SampleProcessor(tokenizer, _config(max_video_tokens=8))
    with pytest.raises(SampleError, match="max_video_tokens=8"):
        proc(src.get(0))


def test_random_sampling_seeded_by_index_and_epoch(synth_dir: Path, tokenizer) -> None:
    src = Source("v", "llava", synth_dir / "llava_video.json")
    cfg = ProcessingConfig(sampling=FrameSampling("random", 4))
    a, b = VambaDataset(src, tokenizer, cfg), VambaDataset(src, tokenizer, cfg)
    torch.testing.assert_close(a[1].pixel_values, b[1].pixel_values)
    b.set_epoch(1)
    assert not torch.equal(a[1].pixel_values, b[1].pixel_values)


def test_tokenizer_without_qwen2_tokens_is_refused() -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, "[UNK]")),
                                    unk_token="[UNK]")
    with pytest.raises(ValueError, match="Qwen2 special tokens"):
        SampleProcessor(plain)


def test_frame_count_from_video_token_budget(synth_dir: Path, tokenizer) -> None:
    src = Source("v", "llava", synth_dir / "llava_video.json")
    # 64x64 -> 56x56 -> 4 tokens per temporal patch: a 10-token budget gives 2 patches = 4 frames
    ds = VambaDataset(src, tokenizer, ProcessingConfig(sampling=FrameSampling("uniform", 999, video_tokens=10)))
    s = ds[0]
    assert s.grid_thw.tolist() == [[2, 4, 4]] and s.num_video_tokens == 8
    assert ds.processor.lengths(src.get(0)) == (s.num_text_tokens, 8)
    too_small = VambaDataset(src, tokenizer, ProcessingConfig(sampling=FrameSampling("uniform", 8, video_tokens=3),
                                                        on_error="raise"))
    with pytest.raises(SampleError, match="smaller than one temporal patch"):
        too_small[0]
