"""The readers benchmark compares decord with the skipping reader on a real file: equal frames, both timed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vamba.bench.readers import main

pytest.importorskip("decord")
av = pytest.importorskip("av")


def test_readers_bench_reports_equal_frames_and_both_times(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    with av.open(str(video), mode="w", format="mp4") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(90):
            c.mux(s.encode(av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), format="rgb24")))
        c.mux(s.encode())
    assert main([str(video), "--frames", "20", "--piece", "6", "--out", str(tmp_path), "--tag", "t"]) == 0
    row = json.loads((tmp_path / "readers_t.json").read_text())["files"][0]
    assert row["frames_equal"] and row["skipping_fast"] and row["frames_read"] == 20
    assert row["decord_s"] >= 0 and row["skipping_s"] >= row["skipping_open_s"] >= 0  # rounded to 0.01 s
