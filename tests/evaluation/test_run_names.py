"""The default ``vamba eval`` directory names its model, and two trained models never share one (issue 27, item 6).

Every ``vamba train`` output is ``<run dir>/final``. The "checkpoints" here are such directories holding recorded
replies; ``model.adapter`` (the documented hook for any ``module:function`` returning a ``VideoQAModel``) answers
from them, so the whole ``vamba eval`` path runs without a network.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vamba.cli import main as vamba_main
from vamba.evaluation.benchmarks import get_benchmark
from vamba.evaluation.replay import ReplayModel

from .minibench import WRITERS

ADAPTER = "tests.evaluation.test_run_names:replay_checkpoint"


def replay_checkpoint(path: str, device: str, dtype: str) -> ReplayModel:
    """``model.adapter``: the "checkpoint" answers from its ``replies.jsonl``."""
    return ReplayModel.from_file(Path(path) / "replies.jsonl")


def trained(root: Path, data: Path, letter: str) -> Path:
    """A ``vamba train``-like output ``root/final`` whose model replies ``letter`` to every question."""
    final = root / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text(json.dumps({"model_type": "vamba", "answer": letter}))
    bench = get_benchmark("lvbench")
    (final / "replies.jsonl").write_text("".join(
        json.dumps({"video": q.video, "prompt": bench.protocol("vamba").prompt(q), "response": letter}) + "\n"
        for q in bench.load(data, {})))
    return final


def evaluate(data: Path, checkpoint: Path) -> int:
    return vamba_main(["eval", "benchmark=lvbench", f"data={data}", f"model.path={checkpoint}",
                       f"model.adapter={ADAPTER}", "progress=false"])


def test_two_trained_models_get_their_own_default_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    data = WRITERS["lvbench"](tmp_path / "LV")  # gold C, A, B
    runs = Path("runs/eval/lvbench/vamba")
    init_sa = trained(tmp_path / "train" / "init_sa", data, "C")
    init_random = trained(tmp_path / "train" / "init_random", data, "A")
    assert evaluate(data, init_sa) == 0 and evaluate(data, init_random) == 0
    assert sorted(p.name for p in runs.iterdir()) == ["init_random-final", "init_sa-final"]
    recorded = json.loads((runs / "init_sa-final" / "run.json").read_text())["model_id"]
    assert recorded["name"] == "init_sa-final" and recorded["path"] == str(init_sa.resolve())
    assert f"Model: `init_sa-final` ({init_sa.resolve()})" in (runs / "init_sa-final" / "report.md").read_text()
    scores = {p.name: json.loads((p / "summary.json").read_text())["score"] for p in runs.iterdir()}
    assert scores == pytest.approx({"init_sa-final": 100 / 3, "init_random-final": 100 / 3})

    # Another checkpoint with the same two names (another sweep's init_sa/final): its own directory, neither
    # refused nor written into the first one.
    other = trained(tmp_path / "sweep2" / "init_sa", data, "B")
    before = (runs / "init_sa-final" / "responses.jsonl").read_text()
    assert evaluate(data, other) == 0
    assert json.loads((runs / "init_sa-final-2" / "run.json").read_text())["model_id"]["path"] == str(other.resolve())
    assert (runs / "init_sa-final" / "responses.jsonl").read_text() == before

    # The same command again finds its own directory (resumes; nothing new is made).
    assert evaluate(data, other) == 0 and evaluate(data, init_sa) == 0
    assert sorted(p.name for p in runs.iterdir()) == ["init_random-final", "init_sa-final", "init_sa-final-2"]

    # Retrained into the same path: other weights, so not resumed into the old answers.
    (init_sa / "replies.jsonl").write_text((other / "replies.jsonl").read_text())
    os.utime(init_sa / "replies.jsonl", ns=(1, 1))
    assert evaluate(data, init_sa) == 0
    replies = [json.loads(line)["response"] for line in (runs / "init_sa-final-3" / "responses.jsonl").open()]
    assert replies == ["B", "B", "B"]
    assert (runs / "init_sa-final" / "responses.jsonl").read_text() == before

    # An explicit out= holding another model is still refused, naming both.
    capsys.readouterr()
    assert vamba_main(["eval", "benchmark=lvbench", f"data={data}", f"model.path={init_random}",
                       f"model.adapter={ADAPTER}", f"out={runs / 'init_sa-final'}", "progress=false"]) == 2
    assert "model_id" in capsys.readouterr().err


def test_compare_labels_arms_by_their_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    data = WRITERS["lvbench"](tmp_path / "LV")  # gold C, A, B
    assert evaluate(data, trained(tmp_path / "train" / "init_sa", data, "C")) == 0
    assert evaluate(data, trained(tmp_path / "train" / "init_random", data, "A")) == 0
    runs = Path("runs/eval/lvbench/vamba")
    capsys.readouterr()
    out = tmp_path / "cmp.json"
    assert vamba_main(["compare", str(runs / "init_sa-final"), "--vs", str(runs / "init_random-final"),
                       "--resamples", "100", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("lvbench: init_sa-final (1 run(s)) vs init_random-final,")
    assert "| group | questions | init_sa-final (%) | init_random-final (%) | init_sa-final - init_random-final" \
        in printed
    assert json.loads(out.read_text())["labels"] == {"a": "init_sa-final", "b": "init_random-final"}
    # named by the user; the same name on both arms is told apart
    assert vamba_main(["compare", f"a={runs / 'init_sa-final'}", f"b={runs / 'init_random-final'}",
                       "resamples=100", "names=[SA init,random init]"]) == 0
    assert capsys.readouterr().out.startswith("lvbench: SA init (1 run(s)) vs random init,")
    assert vamba_main(["compare", str(runs / "init_sa-final"), "--vs", str(runs / "init_sa-final"),
                       "--resamples", "100", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["labels"] == {"a": "init_sa-final (A)", "b": "init_sa-final (B)"}
