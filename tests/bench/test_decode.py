"""The decode benchmark runs every reader on a real file it writes, and what it reports is what was read."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vamba.bench.decode import READERS, main

pytest.importorskip("decord")
pytest.importorskip("av")


def test_decode_bench_reads_the_frames_with_every_reader(tmp_path: Path) -> None:
    out = tmp_path / "decode.json"
    video = tmp_path / "v.mp4"
    assert main(["--video", str(video), "--seconds", "4", "--frames", "32", "--workers", "1", "--repeats", "1",
                 "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["backend"] for r in rows] == list(READERS)
    assert all(r["frames_per_worker"] == 32 and r["frames_per_s"] > 0 for r in rows)
