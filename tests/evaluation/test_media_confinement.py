"""Benchmark annotations cannot make ``vamba eval`` open files outside the benchmark folder (issue 28 item 8)."""
from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

from vamba.cli import main as vamba_main

from .minibench import WRITERS

OPENED: list[str] = []


class RecordingModel:
    """A ``VideoQAModel`` that notes every video it is asked to open and always answers A."""

    def encode_video(self, video):
        OPENED.append(str(video.path))
        return video.path

    def answer(self, encoded, prompt, generation) -> str:
        return "A"


def recording_model(path: str | None, device: str, dtype: str, **limits) -> RecordingModel:
    return RecordingModel()


def _hostile_longvideobench(tmp_path: Path) -> tuple[Path, Path]:
    root = WRITERS["longvideobench"](tmp_path / "LVB")
    outside = tmp_path / "outside.mp4"  # a real video beside the benchmark, not in it
    shutil.copy(root / "videos" / "XyZ-2.mp4", outside)
    rows = json.loads((root / "lvb_val.json").read_text())
    rows[0]["video_path"] = rows[1]["video_path"] = str(outside)  # absolute
    rows[2]["video_path"] = "../../outside.mp4"  # relative to root/videos
    (root / "lvb_val.json").write_text(json.dumps(rows))
    return root, outside


def _opened() -> list[str]:
    """What the adapter's model opened (the CLI imports this file by name: maybe not the module pytest ran)."""
    return importlib.import_module("tests.evaluation.test_media_confinement").OPENED


def _run(root: Path, out: Path, *extra: str) -> int:
    _opened().clear()
    return vamba_main(["eval", "benchmark=longvideobench", f"data={root}", "model.path=x", f"out={out}",
                       "model.adapter=tests.evaluation.test_media_confinement:recording_model", "progress=false",
                       *extra])


def test_videos_outside_the_benchmark_are_skipped_not_opened(tmp_path: Path) -> None:
    root, outside = _hostile_longvideobench(tmp_path)
    assert _run(root, tmp_path / "run") == 0
    assert _opened() == []
    status = json.loads((tmp_path / "run" / "shards" / "rank0.status.json").read_text())
    assert sorted(s["reason"] for s in status["skipped"]) == ["outside the media root"] * 2
    assert sum(s["questions"] for s in status["skipped"]) == 3


def test_strict_stops_and_confine_media_false_opens(tmp_path: Path) -> None:
    root, outside = _hostile_longvideobench(tmp_path)
    assert _run(root, tmp_path / "strict", "strict=true") != 0 and _opened() == []
    assert _run(root, tmp_path / "open", "confine_media=false") == 0
    assert sorted(set(_opened())) == sorted({str(outside), str(root / "videos" / "../../outside.mp4")})


def test_videomme_subtitles_outside_the_benchmark_are_refused(tmp_path: Path) -> None:
    """Video-MME reads subtitle/<videoID>.srt while loading, before the runner sees any path."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pytest

    from vamba.evaluation.benchmarks import BenchmarkDataError, get_benchmark

    root = WRITERS["videomme"](tmp_path / "VMME")
    (tmp_path / "secret.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nsecret\n")
    table = root / "videomme" / "test-00000-of-00001.parquet"
    rows = pq.read_table(table).to_pylist()
    rows[0]["videoID"] = "../../secret"
    pq.write_table(pa.Table.from_pylist(rows), table)
    with pytest.raises(BenchmarkDataError, match="outside"):
        get_benchmark("videomme").load(root, {"subtitles": True})
