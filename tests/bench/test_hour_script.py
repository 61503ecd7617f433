"""scripts/gpu/hour.sh, the one-call GPU script of the hour, run whole on the CPU at the tiny scale (its CPU smoke
mode: a PyAV mp4 instead of OpenCV's, no memory cap); only the lines for the GPU machine differ."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # ~30 s on 2 cores (two benchmark processes): the only check of the GPU call's script before it runs
def test_hour_script_measures_its_points_and_fails_loudly(tmp_path: Path) -> None:
    env = dict(os.environ, OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"), DEVICE="cpu",
               POINTS="vamba:prefill:4 qwen2_vl:prefill:4 vamba:answer_file:12 vamba:train:4 vamba:stage1:4")
    done = subprocess.run(["bash", "scripts/gpu/hour.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith("OK: 5 points measured")
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["efficiency_cpu_smoke.json", "efficiency_cpu_smoke.md", "efficiency_cpu_smoke_memory.png",
                     "efficiency_cpu_smoke_time.png", "hour.log", "video.log"]  # <= 8 come back; 2 to spare
    rows = json.loads((tmp_path / "out" / "efficiency_cpu_smoke.json").read_text())["rows"]
    assert [(r["mode"], r["status"]) for r in rows] == [("prefill", "ok"), ("prefill", "ok"), ("answer_file", "ok"),
                                                        ("train", "ok"), ("stage1", "ok")]
    assert rows[2]["video"] == "hour_84x56_12.mp4" and rows[2]["answer_tokens"] == 4
    # A point that ends in an error fails the script, with the reason as its last line.
    env.update(POINTS="vamba:prefill:4 vamba:answer_file:12", OUT=str(tmp_path / "bad"),
               BENCH_ARGS="device=cpu scale=tiny piece_frames=4 reps=1 answer_video_wait_s=0 "
                          "answer_video=/nonexistent/hour.mp4")
    done = subprocess.run(["bash", "scripts/gpu/hour.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "FAILED: points ended in an error: vamba:answer_file:12" in (done.stdout + done.stderr).strip().splitlines()[-1]
