"""scripts/bench_vision.py (vamba.bench.vision) on the CPU at tiny scale: the real script end to end (the GPU run's
code path), its FLOP count against torch's flop counter, and a failing mode stopping the run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

from vamba.bench.build import vamba_config
from vamba.data.vision import PATCH_DIM

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--device", "cpu", "--scale", "tiny", "--frame-size", "56x84", "--reps", "1"]


def _script(args: list[str], out: Path) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OUT": str(out / "profiles"), "PYTHONPATH": path}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_vision.py"), *TINY, *args,
                           "--out-dir", str(out), "--tag", "t"], capture_output=True, text=True, env=env, timeout=300)


def test_script_measures_every_mode_checks_accuracy_and_profiles(tmp_path: Path) -> None:
    run = _script(["--frames", "2", "4", "--modes", "reference", "fast", "--check-frames", "2"], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "vision_t.json").read_text())
    assert result["device"] == "cpu" and result["date"] and result["environment"]["versions"]["transformers"]
    assert "code_commit" in result and result["matmul_tflops"] > 0
    rows = result["rows"]
    assert [(r["frames"], r["mode"], r["status"]) for r in rows] == [
        (2, "reference", "ok"), (2, "fast", "ok"), (4, "reference", "ok"), (4, "fast", "ok")]
    config = vamba_config("tiny", "reference").vision_config
    config._attn_implementation = "eager"  # attention as matmuls, which the flop counter sees
    tower = Qwen2VisionTransformerPretrainedModel(config).eval()
    h, w = result["setup"]["patch_grid_per_frame"]
    for r in rows:
        assert r["total_ms"] > 0 and r["tflops"] > 0 and r["tokens"] == r["frames"] // 2 * h * w
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            tower(torch.randn(r["tokens"], PATCH_DIM), grid_thw=torch.tensor([[r["frames"] // 2, h, w]]))
        assert r["flop"] == counter.get_total_flops()
        if r["mode"] == "fast":  # float32: the fast forward equals transformers' to rounding
            assert 0 < r["max_rel_diff_pooler_output"] < 1e-5 and 0 < r["max_rel_diff_last_hidden_state"] < 1e-5
    accuracy = result["accuracy"]
    assert accuracy["passed"] and accuracy["truth_dtype"] == "float64"
    assert set(accuracy["forward"]) == {"reference", "fast"}
    assert accuracy["backward_tensors"] == 3 + len(list(tower.parameters()))  # 2 outputs, the pixels, every weight
    for mode in ("reference", "fast"):
        table = (tmp_path / "profiles" / f"vision_profile_t_{mode}.txt").read_text()
        assert "aten::" in table and result["profile"][mode][0]["self_ms"] > 0
    assert result["profile"]["frames"] == 4


def test_a_failing_mode_stops_the_run_after_recording_it(tmp_path: Path) -> None:
    run = _script(["--frames", "2", "--modes", "fast", "--attention", "varlen", "--check-frames", "0"], tmp_path)
    assert run.returncode != 0 and "needs flash-attn or torch.nn.attention.varlen on CUDA" in run.stderr
    rows = json.loads((tmp_path / "vision_t.json").read_text())["rows"]
    assert [(r["mode"], r["status"]) for r in rows] == [("fast", "error")]


def test_script_imports_nothing_the_gpu_image_lacks() -> None:
    """The GPU image has torch, transformers, triton, matplotlib, but no hydra/omegaconf/wandb/decord/av."""
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('bench_vision', "
            "'scripts/bench_vision.py'); spec.loader.exec_module(importlib.util.module_from_spec(spec)); "
            "print(sorted(m for m in ('hydra', 'omegaconf', 'wandb', 'decord', 'av', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
