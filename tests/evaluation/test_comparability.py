"""``comparable`` only for the published protocol on the whole official question set (issue 27, item 3).

Runs go through ``vamba eval`` with replayed replies on files in LVBench's official layout; an official-size
LVBench (1,549 questions over 103 videos, invented content) is written here, the videos as empty files (replay
never decodes them; the runner only checks they exist).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vamba.cli import main as vamba_main
from vamba.evaluation.benchmarks import get_benchmark
from vamba.evaluation.comparability import assess
from vamba.evaluation.metrics import breakdown, macro_mean

from .minibench import WRITERS

QUESTION = "Which colour?\n(A) Red\n(B) Blue\n(C) Black\n(D) White"


def write_official_size_lvbench(root: Path) -> Path:
    """LVBench's ``video_info.meta.jsonl`` with the official counts: 103 videos, 1,549 questions (15 or 16 each)."""
    rows, uid = [], 0
    for v in range(103):
        qa = []
        for _ in range(16 if v < 1549 - 15 * 103 else 15):
            uid += 1
            qa.append({"uid": uid, "question": QUESTION, "answer": "B", "question_type": ["reasoning"],
                       "time_reference": ""})
        rows.append({"key": f"v{v:03d}", "qa": qa})
        (root / "videos").mkdir(parents=True, exist_ok=True)
        (root / "videos" / f"v{v:03d}.mp4").touch()
    assert uid == 1549
    (root / "video_info.meta.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def replay_file(root: Path, out: Path, protocol: str = "vamba") -> Path:
    bench = get_benchmark("lvbench")
    spec = bench.protocol(protocol)
    lines = [json.dumps({"video": q.video, "prompt": spec.prompt(q), "response": "The answer is B"})
             for q in bench.load(root, {})]
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(data root, replies, run directory) of one replayed run over the official-size set (the slow part: 1,549
    appended and fsync'ed records, done once)."""
    tmp = tmp_path_factory.mktemp("lvbench-official")
    root = write_official_size_lvbench(tmp / "LVBench")
    replies = replay_file(root, tmp / "replies.jsonl")
    out = tmp / "run"
    assert vamba_main(["eval", "benchmark=lvbench", f"data={root}", f"replay={replies}", f"out={out}",
                       "progress=false"]) == 0
    return root, replies, out


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_official_set_with_the_published_protocol_is_comparable(official) -> None:
    _, _, out = official
    summary = summary_of(out)
    assert summary["comparable"] and summary["not_comparable"] == [] and summary["comparability"]["differences"] == []
    assert summary["comparability"]["questions"] | {"source": None} == {
        "official": 1549, "official_videos": 103, "source": None, "loaded": 1549, "loaded_videos": 103,
        "answered": 1549, "missing": 0}
    report = (out / "report.md").read_text()
    assert "comparable with the published numbers" in report and "| **this run** | | **100.0** |" in report
    assert "not comparable" not in report.lower()


def mini_run(tmp_path: Path, *args: str, protocol: str = "vamba") -> dict:
    """A replayed run over three invented LVBench questions (official format, not the official set)."""
    root = WRITERS["lvbench"](tmp_path / "mini")
    replies = replay_file(root, tmp_path / f"{protocol}.jsonl", protocol)
    out = tmp_path / "mini-run"
    assert vamba_main(["eval", "benchmark=lvbench", f"data={root}", f"replay={replies}", f"out={out}",
                       f"protocol={protocol}", "progress=false", *args]) == 0
    return summary_of(out) | {"report": (out / "report.md").read_text()}


def test_eight_frames_is_not_comparable_and_says_why(tmp_path: Path) -> None:
    summary = mini_run(tmp_path, "num_frames=8")
    assert not summary["comparable"]
    assert summary["comparability"]["differences"] == [{"setting": "frames.num_frames", "ours": 8, "protocol": 1024}]
    assert summary["not_comparable"] == ["questions: 3 of the official 1549 answered (3 loaded)",
                                         "videos: 2 loaded, the official set has 103",
                                         "frames.num_frames: 8 (protocol: 1024)"]
    report = summary["report"]
    assert "| frames.num_frames | 8 | 1024 |" in report
    assert "Questions: 3 of the official 1549 answered (3 loaded, 0 loaded ids not answered; videos 2 of 103)" in report
    assert ("Published numbers, for reference only: **not comparable with this run because** questions: 3 of the "
            "official 1549 answered") in report
    assert "| **this run** (not comparable, see above) |" in report


def test_lmms_eval_protocol_differs_in_prompt_extraction_and_decoding(tmp_path: Path) -> None:
    summary = mini_run(tmp_path, protocol="lmms_eval")
    settings = {d["setting"]: (d["ours"], d["protocol"]) for d in summary["comparability"]["differences"]}
    assert settings == {"protocol (prompt)": ("lmms_eval", "vamba"), "extractor": ("mcq_extract", "vamba"),
                        "generation.max_new_tokens": (16, 512)}


def test_missing_question_ids_are_counted() -> None:
    bench = get_benchmark("lvbench")
    loaded = [str(i) for i in range(1, 1550)]
    verdict = assess(bench, {}, loaded, 103, loaded[16:])
    assert verdict["questions"]["missing"] == 16 and not verdict["comparable"]
    assert "questions: 1533 of the official 1549 answered; 16 loaded question ids not answered" in \
        verdict["not_comparable"]
    # a set of the right size but other ids answered is not the set: the answered ids must be the loaded ones
    assert assess(bench, {}, loaded, 103, [f"x{i}" for i in range(1549)])["questions"]["missing"] == 1549
    # a benchmark whose official size is not recorded here can never be called comparable
    assert "not recorded" in assess(get_benchmark("mlvu"), {}, ["a"], 1, ["a"])["not_comparable"][0]


def test_rescored_replies_without_their_run_settings_are_not_comparable(official, tmp_path: Path) -> None:
    _, _, out = official
    # beside its run.json the re-scored file keeps the recorded settings: still comparable
    assert vamba_main(["eval", "benchmark=lvbench", f"responses={out / 'responses.jsonl'}",
                       f"out={tmp_path / 'rescored'}"]) == 0
    assert summary_of(tmp_path / "rescored")["comparable"]
    # the same replies alone: frames and decoding unknown
    alone = tmp_path / "alone" / "responses.jsonl"
    alone.parent.mkdir()
    alone.write_text((out / "responses.jsonl").read_text())
    assert vamba_main(["eval", "benchmark=lvbench", f"responses={alone}", f"out={tmp_path / 'rescored2'}"]) == 0
    summary = summary_of(tmp_path / "rescored2")
    assert not summary["comparable"]
    assert {"setting": "frames.num_frames", "ours": "not recorded", "protocol": 1024} in \
        summary["comparability"]["differences"]


def test_empty_groups_have_no_accuracy_and_stay_out_of_means(tmp_path: Path) -> None:
    records = [{"correct": True, "response": "A", "meta": {"task": "1_plotQA", "question_type": "plotQA"}},
               {"correct": False, "response": "B", "meta": {"task": "1_plotQA", "question_type": "plotQA"}}]
    groups = breakdown(records, "task", ("1_plotQA", "2_needle"))
    assert groups["2_needle"] == {"acc": None, "correct": 0, "total": 0}
    assert macro_mean(groups) == 50.0  # not (50 + 0) / 2
    assert get_benchmark("mlvu").metrics(records, False)["m_avg"] == 50.0

    report = mini_run(tmp_path)["report"]
    assert "| event understanding | – | 0 / 0 |" in report and "| event understanding | 0.0" not in report


def test_fp8_runs_are_not_comparable(tmp_path: Path) -> None:
    summary = mini_run(tmp_path, "model.fp8=all")
    assert {"setting": "model.fp8", "ours": "all", "protocol": "none"} in summary["comparability"]["differences"]
    assert "model.fp8: 'all' (protocol: 'none')" in summary["not_comparable"]
