from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from vamba.data.chat import SampleError
from vamba.data.formats import Source, read_records


def test_caption_formats_agree(synth_dir: Path) -> None:
    jsonl = Source("c", "caption", synth_dir / "captions.jsonl")
    parquet = Source("p", "caption", synth_dir / "captions.parquet")
    shards = Source("w", "webdataset", str(synth_dir / "captions-*.tar"))
    hf = Source("h", "hf", synth_dir / "hf_captions")
    assert len(jsonl) == len(parquet) == len(shards) == len(hf) == 10
    for i in (0, 7):  # a video and an image
        ref = jsonl.get(i)
        for other in (parquet, shards, hf):
            s = other.get(i)
            assert [m.kind for m in s.media] == [m.kind for m in ref.media]
            assert [(m.role, m.content) for m in s.messages] == [(m.role, m.content) for m in ref.messages]
    video = jsonl.get(0)
    assert video.media[0].kind == "video" and Path(video.media[0].source).exists()
    assert video.messages[0].content.startswith("<video>\n") and video.messages[1].content.startswith("Shapes appear")
    assert shards.get(0).media[0].source == Path(video.media[0].source).read_bytes()


def test_llava_records(synth_dir: Path) -> None:
    videos = Source("v", "llava", synth_dir / "llava_video.json")
    images = Source("i", "llava", synth_dir / "llava_image.json")
    s = videos.get(2)
    assert s.key == "v:2" and [m.role for m in s.messages] == ["user", "assistant", "user", "assistant"]
    assert s.media[0].kind == "video" and s.media[0].source == str(synth_dir / "videos" / "video_00002.mp4")
    assert images.get(0).media[0].kind == "image"


def test_llava_multi_image_and_media_root(tmp_path: Path) -> None:
    (tmp_path / "ann.json").write_text(json.dumps([
        {"image": ["a.png", "b.png"], "conversations": [{"from": "human", "value": "<image><image>Same?"},
                                                          {"from": "gpt", "value": "No."}]},
        {"conversations": [{"from": "human", "value": "Text only?"}, {"from": "gpt", "value": "Yes."}]},
        # LLaVA-Video-178K writes <image> for its videos
        {"video": "v.mp4", "conversations": [{"from": "human", "value": "<image>\nWhat happens?"},
                                              {"from": "gpt", "value": "A dog runs."}]}]))
    src = Source("m", "llava", tmp_path / "ann.json", media_root="/data/imgs")
    assert [m.source for m in src.get(0).media] == ["/data/imgs/a.png", "/data/imgs/b.png"]
    assert src.get(1).media == []
    video = src.get(2)
    assert [m.kind for m in video.media] == ["video"]
    from vamba.data.chat import insert_vision_markers

    assert insert_vision_markers(video.messages, 1)[0].content == "<|vision_start|><|vision_end|>What happens?"


def test_malformed_records_raise_sample_errors(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text('{"image": "x.png"}\n{not json\n{"image": "x.png", "caption": "ok"}\n'
                                      '{"image": 3, "caption": "bad path"}\n["a list"]\n')
    src = Source("c", "caption", tmp_path / "c.jsonl")
    assert len(src) == 5
    with pytest.raises(SampleError, match="without a non-empty 'caption'"):
        src.get(0)
    with pytest.raises(SampleError, match="not valid JSON"):
        src.get(1)
    assert src.get(2).messages[1].content == "ok"
    with pytest.raises(SampleError, match="bad 'image' field"):
        src.get(3)
    with pytest.raises(SampleError, match="not an object"):
        src.get(4)


def test_webdataset_member_problems(tmp_path: Path, synth_dir: Path) -> None:
    import io

    shard = tmp_path / "s.tar"
    png = (synth_dir / "images" / "image_00000.png").read_bytes()
    conversation = json.dumps({"conversations": [{"from": "human", "value": "<image>Q"},
                                                 {"from": "gpt", "value": "A."}]}).encode()
    with tarfile.open(shard, "w") as tar:
        for name, data in [("a.png", png), ("a.txt", b"A cap."), ("b.png", png), ("c.png", png), ("c.jpg", png),
                           ("c.txt", b"x"), ("d.png", png), ("d.json", conversation)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    src = Source("w", "webdataset", shard)
    by_key = {src._records[i]["__key__"]: i for i in range(len(src))}
    assert src.get(by_key["a"]).messages[1].content == "A cap."
    with pytest.raises(SampleError, match="no caption"):
        src.get(by_key["b"])
    with pytest.raises(SampleError, match="2 media members"):
        src.get(by_key["c"])
    assert src.get(by_key["d"]).messages[0].content == "<image>Q"


def test_missing_files_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Source("x", "caption", tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError):
        Source("x", "webdataset", str(tmp_path / "nope-*.tar"))
    with pytest.raises(FileNotFoundError):
        Source("x", "hf", tmp_path / "nope")
    (tmp_path / "a.jsonl").write_text("")
    with pytest.raises(ValueError, match="unknown dataset format"):
        Source("x", "csv", tmp_path / "a.jsonl")
    (tmp_path / "a.txt").write_text("")
    with pytest.raises(ValueError, match="unsupported annotation file"):
        read_records(tmp_path / "a.txt")


def test_hf_dataset_with_image_feature(tmp_path: Path, synth_dir: Path, tokenizer) -> None:
    import datasets
    from PIL import Image

    from vamba.data.dataset import VambaDataset

    path = synth_dir / "images" / "image_00000.png"
    rows = {"image": [str(path)], "conversations": [[{"from": "human", "value": "<image>\nWhat shape?"},
                                                     {"from": "gpt", "value": "A circle."}]]}
    ds = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "hf"))
    src = Source("hf", "hf", tmp_path / "hf")
    sample = src.get(0)
    assert isinstance(sample.media[0].source, Image.Image) and sample.media[0].kind == "image"
    processed = VambaDataset(src, tokenizer)[0]
    assert processed.grid_thw.tolist() == [[1, 4, 4]]
