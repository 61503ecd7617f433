"""``vamba eval`` through the real CLI entry point: validation, replay runs and re-scoring."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vamba.cli import main as vamba_main
from vamba.evaluation.benchmarks import get_benchmark
from vamba.utils.io import read_jsonl

from .minibench import WRITERS


def test_eval_is_a_vamba_command(capsys: pytest.CaptureFixture) -> None:
    assert vamba_main(["--help"]) == 0 and "eval" in capsys.readouterr().out
    assert vamba_main(["eval", "--help"]) == 0 and "lvbench" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["benchmark=lvbench", "bogus=1"], "unknown key bogus"),
    (["benchmark=lvbench", "num_frame=8"], "unknown key num_frame; did you mean num_frames?"),
    (["benchmark=lvbench", "model.pth=x"], "unknown key model.pth; did you mean model.path? valid keys of model:"),
    (["benchmark=lvbench", "limit=many"], "limit expects int, got 'many'"),
    (["benchmark=egoschema", "data=x", "replay=y"], "unknown benchmark 'egoschema'"),
    (["benchmark=lvbench"], "data=<benchmark folder> is required"),
    (["data=x"], "required: benchmark=..."),
    (["benchmark=lvbench", "what"], "unexpected argument 'what': write key=value"),
    # an earlier spelling: parsed (the run then stops at the missing data=), with the key to write instead
    (["benchmark=lvbench", "frames=8"], "vamba eval: frames=8 is deprecated; write num_frames=8"),
    (["benchmark=lvbench", "--limit", "3"], "vamba eval: --limit 3 is deprecated; write limit=3"),
])
def test_bad_arguments_fail_fast(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert vamba_main(["eval", *argv]) == 2
    assert message in capsys.readouterr().err


def test_model_path_without_adapter_is_explained(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = WRITERS["lvbench"](tmp_path / "LV")
    assert vamba_main(["eval", "benchmark=lvbench", f"data={root}", "model.path=/ckpt/vamba",
                       "model.adapter=vamba.no_such_module:load"]) == 2
    assert "cannot load model adapter" in capsys.readouterr().err
    # The default adapter (vamba.inference.video_qa) names a missing checkpoint.
    assert vamba_main(["eval", "benchmark=lvbench", f"data={root}", "model.path=/ckpt/vamba"]) == 2
    assert "checkpoint directory /ckpt/vamba does not exist" in capsys.readouterr().err


def test_out_of_memory_surfaces_with_its_traceback(tmp_path: Path) -> None:
    """Only our own clear errors become one line (exit 2): a CUDA out-of-memory error from the model propagates."""
    root = WRITERS["lvbench"](tmp_path / "LV")
    with pytest.raises(torch.OutOfMemoryError, match="CUDA out of memory"):
        vamba_main(["eval", "benchmark=lvbench", f"data={root}", "model.path=/ckpt/any", f"out={tmp_path / 'run'}",
                    "model.adapter=tests.evaluation.minibench:out_of_memory_model", "progress=false"])


def test_replay_run_then_rescore(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = WRITERS["nextqa"](tmp_path / "NExTQA")
    bench = get_benchmark("nextqa")
    questions = bench.load(root, {})
    replies = ["(B) run away", "The boy starts to cry after that moment", "A"]
    recorded = tmp_path / "recorded.jsonl"
    recorded.write_text("".join(json.dumps({"video": q.video, "prompt": bench.protocol("vamba").prompt(q),
                                            "response": r}) + "\n" for q, r in zip(questions, replies)))
    out = tmp_path / "run"
    assert vamba_main(["eval", "benchmark=nextqa", f"data={root}", f"replay={recorded}", f"out={out}",
                       "progress=false"]) == 0
    assert "NExT-QA overall = 66.67" in capsys.readouterr().out
    assert json.loads((out / "run.json").read_text())["frames"]["num_frames"] == 512

    assert vamba_main(["eval", "benchmark=nextqa", f"responses={out / 'responses.jsonl'}", "protocol=lmms_eval"]) == 0
    assert "NExT-QA overall = 100.00" in capsys.readouterr().out  # lmms-eval's parser matches "cry" -> E
    rescored = out / "rescore-lmms_eval-default"
    assert [r["pred"] for r in read_jsonl(rescored / "responses.jsonl")] == ["B", "E", "A"]
    assert (rescored / "report.md").exists()


def test_limit_and_overrides_reach_the_run(tmp_path: Path) -> None:
    root = WRITERS["lvbench"](tmp_path / "LV")
    bench = get_benchmark("lvbench")
    q = bench.load(root, {})[0]
    recorded = tmp_path / "rec.jsonl"
    recorded.write_text(json.dumps({"video": q.video, "prompt": bench.protocol("vamba").prompt(q), "response": "C"}))
    out = tmp_path / "run"
    assert vamba_main(["eval", "benchmark=lvbench", f"data={root}", f"replay={recorded}", f"out={out}", "limit=1",
                       "num_frames=64", "max_new_tokens=8", "progress=false"]) == 0
    settings = json.loads((out / "run.json").read_text())
    assert (settings["questions"], settings["frames"]["num_frames"], settings["generation"]["max_new_tokens"]) == \
        (1, 64, 8)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["score"] == 100 and summary["complete"]
    # One question of three: complete as asked, but not a benchmark score.
    assert not summary["comparable"]
    assert summary["not_comparable"] == ["questions: 1 of the official 1549 answered (1 loaded)",
                                         "videos: 1 loaded, the official set has 103",
                                         "frames.num_frames: 64 (protocol: 1024)",
                                         "generation.max_new_tokens: 8 (protocol: 512)", "limit: 1 (protocol: None)"]
    assert "NOT comparable" in (out / "report.md").read_text().splitlines()[2]
    assert vamba_main(["eval", "benchmark=lvbench", f"data={root}", f"replay={recorded}", "limit=0"]) == 2


def test_fp8_never_falls_back_silently(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An adapter that cannot apply model.fp8 is an error, not a bf16 run labelled FP8."""
    root = WRITERS["lvbench"](tmp_path / "LV")
    assert vamba_main(["eval", "benchmark=lvbench", f"data={root}", "model.path=/ckpt/any", "model.fp8=all",
                       "model.adapter=tests.evaluation.minibench:fixed_keys_model", f"out={tmp_path / 'run'}",
                       "progress=false"]) == 2
    assert "takes no fp8: model.fp8=all cannot apply" in capsys.readouterr().err
