"""Hostile media files (issue 28): each is a counted skip naming the file, never the end of a run.

Real crafted files: a 65-byte PNG whose header declares 30000x30000 (PIL's DecompressionBombError, not an
OSError), a 402x2 PNG (aspect over 200, which smart_resize refuses on the header-only packing path) and an mp4
whose frame durations are 0 (decord reports fps NaN; fps sampling cannot use it).
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vamba.data.dataset import ProcessingConfig, VambaDataset
from vamba.data.formats import Source
from vamba.data.sampling import FrameSampling
from vamba.data.video import VideoReadConfig, decord_available


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, side: int = 30000) -> Path:
    """A tiny PNG declaring ``side x side`` RGB pixels (its pixel data is a few bytes)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b""))
                     + _chunk(b"IEND", b""))
    return path


def fps0_mp4(path: Path) -> Path:
    """A real H.264 mp4 whose sample-duration table (stts) gives every frame duration 0."""
    import io

    from vamba.data.synth import write_mp4

    buf = io.BytesIO()
    write_mp4(buf, np.zeros((8, 32, 32, 3), np.uint8), fps=8)
    data = bytearray(buf.getvalue())
    at = data.find(b"stts")
    for k in range(struct.unpack(">I", data[at + 8:at + 12])[0]):  # entries: (sample_count, sample_delta)
        data[at + 16 + 8 * k:at + 20 + 8 * k] = b"\x00\x00\x00\x00"
    path.write_bytes(bytes(data))
    return path


@pytest.fixture()
def hostile_dir(tmp_path: Path, synth_dir: Path) -> Path:
    bomb_png(tmp_path / "bomb.png")
    Image.new("RGB", (402, 2), "red").save(tmp_path / "wide.png")
    (tmp_path / "ok.png").write_bytes((synth_dir / "images" / "image_00000.png").read_bytes())
    records = [{"image": "bomb.png", "caption": "b"}, {"image": "wide.png", "caption": "w"},
               {"image": "ok.png", "caption": "good"}]
    (tmp_path / "ann.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "mixture.yaml").write_text("sources:\n  - {name: hostile, format: caption, path: ann.jsonl}\n")
    return tmp_path


def test_bomb_png_is_65_bytes_and_a_pil_bomb(tmp_path: Path) -> None:
    path = bomb_png(tmp_path / "bomb.png")
    assert path.stat().st_size == 65
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)


@pytest.mark.parametrize("packed", [False, True])
def test_bomb_and_wide_images_are_counted_skips_naming_the_file(hostile_dir: Path, tokenizer, packed: bool) -> None:
    ds = VambaDataset(Source("hostile", "caption", hostile_dir / "ann.jsonl"), tokenizer,
                      ProcessingConfig(skip_log=str(hostile_dir / "skips.jsonl")))
    if packed:  # header-only path of packing
        assert [x is None for x in ds.measure()] == [True, True, False]
    else:
        assert [ds[i].key for i in range(3)] == ["hostile:2"] * 3
    skips = [json.loads(line) for line in (hostile_dir / "skips.jsonl").read_text().splitlines()]
    assert {s["key"] for s in skips} == {"hostile:0", "hostile:1"}
    assert any("bomb.png" in s["detail"] for s in skips if s["key"] == "hostile:0")
    assert any("wide.png" in s["detail"] and "aspect" in s["detail"] for s in skips if s["key"] == "hostile:1")


def test_data_stats_survives_hostile_images(hostile_dir: Path, synth_dir: Path, capsys) -> None:
    from vamba.data.cli import main

    assert main(["stats", f"mixture={hostile_dir / 'mixture.yaml'}", f"tokenizer={synth_dir / 'tokenizer'}",
                 "text_budget=512", "video_budget=512"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] == 1 and out["skipped"] == {"SampleError": 2}


@pytest.mark.skipif(not decord_available(), reason="decord reads this file's fps as NaN")
@pytest.mark.parametrize("packed", [False, True])
def test_video_with_fps_nan_is_a_counted_skip_with_fps_sampling(tmp_path: Path, tokenizer, packed: bool) -> None:
    fps0_mp4(tmp_path / "fps0.mp4")
    (tmp_path / "ann.jsonl").write_text(json.dumps({"video": "fps0.mp4", "caption": "z"}) + "\n")
    ds = VambaDataset(Source("v", "caption", tmp_path / "ann.jsonl"), tokenizer,
                      ProcessingConfig(sampling=FrameSampling("fps", 4, fps=2.0),
                                       video=VideoReadConfig(backend="decord", fallback=None, timeout_s=30)))
    if packed:
        assert ds.measure() == [None]
    else:
        assert ds.try_get(0) is None
    assert sum(ds.skips.counts.values()) == 1
