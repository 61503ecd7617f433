"""``vamba compare`` on real ``vamba eval`` output directories (replayed replies on an LVBench-layout benchmark)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vamba.cli import main as vamba_main
from vamba.evaluation.benchmarks import get_benchmark

from .minibench import WRITERS


def _eval(tmp_path: Path, root: Path, name: str, letters: str) -> Path:
    """A ``vamba eval`` run whose model replies ``letters[i]`` to question i (replayed through the runner)."""
    bench = get_benchmark("lvbench")
    questions = bench.load(root, {})
    recorded = tmp_path / f"{name}.replies.jsonl"
    recorded.write_text("".join(json.dumps({"video": q.video, "prompt": bench.protocol("vamba").prompt(q),
                                            "response": f"The answer is {letter}."}) + "\n"
                                for q, letter in zip(questions, letters)))
    out = tmp_path / name
    assert vamba_main(["eval", "benchmark=lvbench", f"data={root}", f"replay={recorded}", f"out={out}",
                       "progress=false"]) == 0
    return out


def test_paired_difference_counts_and_left_out_questions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = WRITERS["lvbench"](tmp_path / "LV")  # 3 questions, gold C, A, B
    # seed 0: A right on q1, q2; B right on q2, q3. seed 1: A right on all; B right on q1 only.
    a0, a1 = _eval(tmp_path, root, "a0", "CAD"), _eval(tmp_path, root, "a1", "CAB")
    b0, b1 = _eval(tmp_path, root, "b0", "DAB"), _eval(tmp_path, root, "b1", "CCC")
    out = tmp_path / "cmp.json"
    assert vamba_main(["compare", f"a=[{a0},{a1}]", f"b={b0},{b1}", "resamples=500", f"out={out}"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert (result["benchmark"], result["questions"], result["left_out"]) == ("lvbench", 3, 0)
    overall = result["groups"][0]
    assert overall["group"] == "overall" and (overall["a"], overall["b"]) == (83.33, 50.0)
    assert overall["per_seed"] == [0.0, 66.67]
    # discordant pairs: seed 0 q1 (A), q3 (B); seed 1 q2 (A), q3 (A)
    assert (overall["only_a"], overall["only_b"]) == (3, 1) and overall["mcnemar_p"] == pytest.approx(0.625)
    assert overall["difference"]["estimate"] == 33.33
    # question types as groups: "entity recognition" holds q1 and q3
    entity = next(r for r in result["groups"] if r["group"] == "entity recognition")
    assert entity["questions"] == 2 and (entity["only_a"], entity["only_b"]) == (2, 1)
    assert "| overall | 3 |" in printed and "left out" in printed

    # a video that could not be read in one run: its question has no pair, and the count says so
    (root / "videos" / "vidB.mp4").unlink()
    b1_short = tmp_path / "b1_short"
    assert vamba_main(["eval", "benchmark=lvbench", f"data={root}", f"replay={tmp_path / 'b1.replies.jsonl'}",
                       f"out={b1_short}", "progress=false"]) == 0
    result = json.loads(_compare(capsys, a0, a1, "--vs", b0, b1_short))
    assert (result["questions"], result["left_out"]) == (2, 1)


def _compare(capsys: pytest.CaptureFixture, *args) -> str:
    """The earlier spelling (positional runs of A, ``--vs`` runs of B, ``--flags``): still parsed, with a
    deprecation line."""
    path = Path(args[0]).parent / "cmp2.json"
    assert vamba_main(["compare", *map(str, args), "--resamples", "200", "--out", str(path)]) == 0
    assert "vamba compare: --vs " in capsys.readouterr().err
    return path.read_text()


def test_runs_that_cannot_be_compared_are_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = WRITERS["lvbench"](tmp_path / "LV")
    a = _eval(tmp_path, root, "a", "CAB")
    other = WRITERS["nextqa"](tmp_path / "NQ")
    bench = get_benchmark("nextqa")
    recorded = tmp_path / "nq.jsonl"
    recorded.write_text("".join(json.dumps({"video": q.video, "prompt": bench.protocol("vamba").prompt(q),
                                            "response": "A"}) + "\n" for q in bench.load(other, {})))
    nq = tmp_path / "nq"
    assert vamba_main(["eval", "benchmark=nextqa", f"data={other}", f"replay={recorded}", f"out={nq}",
                       "progress=false"]) == 0
    capsys.readouterr()
    for args, message in (([a, "--vs", nq], "different benchmarks"),
                          ([a, a, "--vs", a], "one run of B per run of A"),
                          ([a, "--vs", tmp_path / "missing"], "responses.jsonl not found")):
        assert vamba_main(["compare", *map(str, args)]) == 2
        assert message in capsys.readouterr().err


def test_runs_made_with_other_settings_or_questions_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A setting other than the model differs: an error naming it, unless ``differ=`` allows it (then listed); one
    question id naming two questions (another annotation file): an error; one run per arm: said above the table."""
    root = WRITERS["lvbench"](tmp_path / "LV")
    a, b = _eval(tmp_path, root, "a", "CAB"), _eval(tmp_path, root, "b", "CAD")
    bench = get_benchmark("lvbench")
    recorded = tmp_path / "b.replies.jsonl"
    few = tmp_path / "few"
    assert vamba_main(["eval", "benchmark=lvbench", f"data={root}", f"replay={recorded}", f"out={few}",
                       "progress=false", "num_frames=8"]) == 0
    capsys.readouterr()
    assert vamba_main(["compare", f"a={a}", f"b={few}"]) == 2
    err = capsys.readouterr().err
    assert "the runs differ in 'frames'" in err and "differ=[frames]" in err
    out = tmp_path / "cmp.json"
    assert vamba_main(["compare", f"a={a}", f"b={few}", "differ=[frames]", "resamples=200", f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "Allowed to differ (differ=): frames:" in printed and "One run per arm" in printed
    result = json.loads(out.read_text())
    assert [v["num_frames"] for v in result["differing"]["frames"].values()] == [1024, 8]
    assert vamba_main(["compare", f"a={a}", f"b={b}", "differ=[framez]"]) == 2
    assert "differ names settings the runs do not record: ['framez']" in capsys.readouterr().err

    # the same ids, another annotation file: question 1's gold answer differs
    other = WRITERS["lvbench"](tmp_path / "LV2")
    meta = other / "video_info.meta.jsonl"
    meta.write_text(meta.read_text().replace('"answer": "C"', '"answer": "D"'))
    moved = tmp_path / "moved"
    questions = bench.load(other, {})
    recorded.write_text("".join(json.dumps({"video": q.video, "prompt": bench.protocol("vamba").prompt(q),
                                            "response": "The answer is C."}) + "\n" for q in questions))
    assert vamba_main(["eval", "benchmark=lvbench", f"data={other}", f"replay={recorded}", f"out={moved}",
                       "progress=false"]) == 0
    capsys.readouterr()
    assert vamba_main(["compare", f"a={a}", f"b={moved}", "differ=[data]"]) == 2
    assert "question '1' is another question" in capsys.readouterr().err
