from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from vamba.data.synth import COLOURS, TASKS, SynthConfig, generate, make_video_spec, render_video, write_mp4
from vamba.data.video import open_video

PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)


def _visible_colours(frames: np.ndarray) -> list[str | None]:
    """Per frame: the palette colour of the saturated pixels (the shape), or None when no shape is visible."""
    names = list(COLOURS)
    out = []
    for f in frames.astype(np.float32):
        mask = (f.max(-1) - f.min(-1)) > 80
        if mask.sum() < 30:
            out.append(None)
            continue
        mean = f[mask].mean(0)
        out.append(names[int(np.argmin(((PALETTE - mean) ** 2).sum(-1)))])
    return out


@pytest.mark.parametrize("task", TASKS)
def test_the_answer_is_in_the_decoded_video(tmp_path: Path, task: str) -> None:
    rng = random.Random(task)
    for k in range(4):
        spec = make_video_spec(rng, "v", task, 32)
        path = tmp_path / f"{k}.mp4"
        write_mp4(path, render_video(spec, 64, np.random.default_rng(k)), fps=8)
        seen = _visible_colours(open_video(path, "pyav").get_frames(range(32)))
        expected = [None] * 32
        for e in spec.events:
            expected[e.start:e.end] = [e.colour] * (e.end - e.start)
        assert seen == expected
        assert all(e.end - e.start >= 32 // 8 for e in spec.events)  # 8 uniform frames see every event
        if task == "needle":
            needle = spec.question.removeprefix("What colour was the ").rstrip("?")
            assert spec.options[spec.answer] == next(e.colour for e in spec.events if e.shape == needle)
        elif task == "count":
            target = spec.question.removeprefix("How many times did the ").removesuffix(" appear?")
            assert int(spec.options[spec.answer]) == sum(e.name == target for e in spec.events)
        elif task == "after":
            anchor = spec.question.removeprefix("What colour was the shape that appeared right after the ")
            colours = [e.colour for e in spec.events]
            assert spec.options[spec.answer] == colours[colours.index(anchor.removesuffix(" one?")) + 1]
        else:
            assert spec.options[spec.answer] == f"The {spec.events[0].name}"
        assert len(set(spec.options)) == 4


def test_fixed_option_order_changes_only_the_order() -> None:
    """shuffle_options=False: colour options in COLOURS order, the same events, question and answer text."""
    for seed in range(12):
        task = TASKS[seed % len(TASKS)]
        shuffled = make_video_spec(random.Random(seed), "v", task, 32)
        fixed = make_video_spec(random.Random(seed), "v", task, 32, shuffle_options=False)
        assert (fixed.events, fixed.question, fixed.options[fixed.answer]) == (
            shuffled.events, shuffled.question, shuffled.options[shuffled.answer])
        if task in ("needle", "after"):
            assert fixed.options == list(COLOURS)
        else:
            assert fixed.options == shuffled.options


def test_order_by_colour_asks_for_the_first_shapes_colour() -> None:
    """order_question="colour": the two shapes differ in colour and the answer is the first one's colour."""
    for seed in range(8):
        for shuffle in (True, False):
            spec = make_video_spec(random.Random(seed), "v", "order", 32, shuffle_options=shuffle,
                                   order_question="colour")
            first, second = spec.events
            assert first.end <= second.start and first.colour != second.colour
            assert spec.options[spec.answer] == first.colour and sorted(spec.options) == sorted(COLOURS)
            assert spec.options == list(COLOURS) or shuffle
    with pytest.raises(ValueError, match="order_question"):
        SynthConfig(order_question="when")


def test_after_needs_the_order_of_three_events() -> None:
    """The "after" task: three shapes in three colours, the answer the colour right after the anchor's; both
    colours other than the anchor's are in the video, so the set of colours alone leaves two candidates, and
    over many draws each candidate is the answer about half the time (nothing but the order decides)."""
    later = 0
    for seed in range(200):
        spec = make_video_spec(random.Random(seed), "v", "after", 32, shuffle_options=False)
        a, b, c = spec.events
        assert a.end <= b.start and b.end <= c.start and len({a.colour, b.colour, c.colour}) == 3
        assert len({a.shape, b.shape, c.shape}) == 3 and spec.options == list(COLOURS)
        anchor = a if f"after the {a.colour} one" in spec.question else b
        assert f"after the {anchor.colour} one" in spec.question  # never the last event
        answer = spec.options[spec.answer]
        assert answer == (b if anchor is a else c).colour
        # the other candidate a set-only reader would weigh equally: the later of the two remaining events
        later += answer == c.colour
    assert 70 <= later <= 130


def test_tasks_choose_what_a_data_set_asks(tmp_path: Path) -> None:
    from vamba.utils.cli_args import parse_args

    assert SynthConfig().tasks == ("needle", "order", "count")
    assert parse_args(SynthConfig, ["tasks=after, needle"], prog="t").tasks == ("after", "needle")  # vamba data synth
    manifest = generate(SynthConfig(out=str(tmp_path), num_videos=4, num_images=0, num_bench_videos=4,
                                    min_frames=16, max_frames=16, tokenizer=False, tasks=("after", "needle")))
    assert manifest["tasks"] == {"after": 2, "needle": 2}
    rows = [json.loads(line) for line in (tmp_path / "lvbench" / "lvbench_processed.jsonl").read_text().splitlines()]
    assert [r["question_type"] for r in rows] == [["reasoning"], ["entity recognition"]] * 2
    for bad in (("needle", "when"), (), ("order", "order")):
        with pytest.raises(ValueError, match="tasks"):
            SynthConfig(tasks=bad)


def test_benchmark_files_follow_official_layouts(synth_dir: Path) -> None:
    meta = [json.loads(line) for line in (synth_dir / "lvbench" / "video_info.meta.jsonl").read_text().splitlines()]
    assert len(meta) == 3
    for video in meta:
        assert set(video) >= {"key", "qa"} and (synth_dir / "lvbench" / "videos" / f"{video['key']}.mp4").exists()
        for qa in video["qa"]:
            assert set(qa) == {"uid", "question", "answer", "question_type", "time_reference"}
            assert qa["answer"] in "ABCD" and isinstance(qa["question_type"], list)
            assert [line[:4] for line in qa["question"].split("\n")[1:]] == ["(A) ", "(B) ", "(C) ", "(D) "]
    flat = [json.loads(line) for line in (synth_dir / "lvbench" / "lvbench_processed.jsonl").read_text().splitlines()]
    assert set(flat[0]) >= {"file_path", "question", "answer", "question_type", "uid"}
    table = pq.read_table(synth_dir / "videomme" / "videomme" / "test-00000-of-00001.parquet")
    assert table.column_names == ["video_id", "duration", "domain", "sub_category", "url", "videoID", "question_id",
                                  "task_type", "question", "options", "answer"]
    for row in table.to_pylist():
        assert (synth_dir / "videomme" / "data" / f"{row['videoID']}.mp4").exists()
        assert [o[:3] for o in row["options"]] == ["A. ", "B. ", "C. ", "D. "] and row["answer"] in "ABCD"
        assert row["duration"] in ("short", "medium", "long")


def test_manifest_lists_every_file(synth_dir: Path) -> None:
    manifest = json.loads((synth_dir / "manifest.json").read_text())
    assert manifest["counts"]["videos"] == 6 and manifest["tasks"] == {"needle": 2, "order": 2, "count": 2}
    files = {str(p.relative_to(synth_dir)) for p in synth_dir.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == files


def test_deterministic_per_seed(tmp_path: Path) -> None:
    small = {"num_videos": 3, "num_images": 2, "num_bench_videos": 1, "min_frames": 8, "max_frames": 12,
             "tokenizer": False}
    a = generate(SynthConfig(out=str(tmp_path / "a"), seed=5, **small))
    b = generate(SynthConfig(out=str(tmp_path / "b"), seed=5, **small))
    generate(SynthConfig(out=str(tmp_path / "c"), seed=6, **small))
    assert a["files"] == b["files"]
    for name in ("captions.jsonl", "llava_video.json", "lvbench/video_info.meta.jsonl"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    assert (tmp_path / "a" / "captions.jsonl").read_text() != (tmp_path / "c" / "captions.jsonl").read_text()
    for f in ("videos/video_00000.mp4", "images/image_00001.png"):
        fa = open_video(tmp_path / "a" / f if f.endswith("mp4") else tmp_path / "a" / "images", "pyav")
        fb = open_video(tmp_path / "b" / f if f.endswith("mp4") else tmp_path / "b" / "images", "pyav")
        n = fa.info().num_frames
        np.testing.assert_array_equal(fa.get_frames(range(n)), fb.get_frames(range(n)))


def test_encoding_the_same_frames_gives_the_same_bytes() -> None:
    """write_mp4 is a function of the frames: before x264's macroblock tree was turned off, its AVX-512
    code gave 2-4 different files for one of these videos within a few encodes (docs/data.md)."""
    import io

    for k, (size, num_frames) in enumerate([(64, 12), (64, 12), (96, 32), (112, 48)]):
        spec = make_video_spec(random.Random(k), "v", TASKS[k % len(TASKS)], num_frames)
        frames = render_video(spec, size, np.random.default_rng(k))
        files = set()
        for _ in range(12):
            buffer = io.BytesIO()
            write_mp4(buffer, frames, fps=8)
            files.add(buffer.getvalue())
        assert len(files) == 1, f"video {k}: {len(files)} different encodings of the same frames"


def test_video_workers_write_the_same_files(tmp_path: Path) -> None:
    """Videos encoded by 2 processes are byte-identical to those of 1 (the demo encodes with 2)."""
    small = {"num_videos": 4, "num_images": 1, "num_bench_videos": 3, "min_frames": 8, "max_frames": 12,
             "tokenizer": False, "seed": 2}
    one = generate(SynthConfig(out=str(tmp_path / "one"), **small))
    two = generate(SynthConfig(out=str(tmp_path / "two"), workers=2, **small))
    videos = [f for f in one["files"] if f.endswith(".mp4")]
    assert one["files"] == two["files"] and len(videos) == 4 + 2 * 3  # bench videos: LVBench + Video-MME copies
    for f in videos:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f
    with pytest.raises(ValueError, match="workers"):
        SynthConfig(workers=0)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vamba.cli import main

    assert main(["data", "synth", f"out={tmp_path}", "num_videos=2", "num_images=1", "num_bench_videos=1",
                 "min_frames=8", "max_frames=8", "tokenizer=false"]) == 0
    assert (tmp_path / "manifest.json").exists() and "wrote" in capsys.readouterr().out
    assert main(["data", "synth", f"out={tmp_path}", "num_videos=1", "num_images=1", "num_bench_videos=1",
                 "min_frames=8", "max_frames=8", "tokenizer=false"]) == 0
    assert not (tmp_path / "videos" / "video_00001.mp4").exists()  # files of the previous run are replaced
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert all((tmp_path / f).exists() for f in manifest["files"]) and manifest["counts"]["videos"] == 1
    capsys.readouterr()
    assert main(["data", "synth", "num_vidoes=2"]) == 2
    assert "unknown key num_vidoes; did you mean num_videos?" in capsys.readouterr().err
    assert main(["data", "synth", "size=33"]) == 2
    assert main(["data"]) == 0 and main(["data", "nope"]) == 2


def test_cli_stats(synth_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from vamba.cli import main

    assert main(["data", "stats", f"mixture={synth_dir / 'mixture.yaml'}", f"tokenizer={synth_dir / 'tokenizer'}",
                 "num_frames=8", "text_budget=400", "video_budget=64"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["samples"] == stats["ok"] == 26 and stats["skipped"] == {}
    assert stats["video_tokens"]["max"] == 16 and stats["packing"]["unpackable"] == 0
    assert 0 < stats["packing"]["rows"] < 26 and stats["packing"]["fill"]["video"] <= 1
