"""`vamba train` with context parallelism (parallel.context_parallel_size) on CPU: real torchrun processes, gloo,
the HF Trainer, real mp4 data, a tiny float64 model (so that equality is checked to 1e-9, not float32 noise)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vamba.utils.io import read_jsonl

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(n: int, overrides: list[str]) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "vamba.cli", "train", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _steps(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_jsonl(run / "log.jsonl") if "loss" in r}


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "final" / "model.safetensors")), load_file(str(b / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        # atol: cross-attention key biases get a zero gradient in exact arithmetic (softmax ignores a constant
        # shift of every key); what they hold is 1e-16 rounding noise in both runs
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-9, atol=1e-12, msg=key)


# ~2.5 min on 2 shared cores (three torchrun launches of 2, 4 and 2 processes, each importing torch, transformers
# and DeepSpeed and decoding videos); the CP x DP composition and the CP-independent checkpoint need them all
@pytest.mark.slow
def test_cp2_x_dp2_equals_cp1_x_dp2_and_resumes_at_cp1(train_overrides, tmp_path) -> None:
    common = [o for o in train_overrides if not o.startswith(("output_dir=", "optim.global_batch_size="))]
    common += ["model.dtype=float64", "optim.global_batch_size=4", "optim.max_steps=2", "logging.save_steps=1"]
    reference, sharded = tmp_path / "cp1_dp2", tmp_path / "cp2_dp2"
    _torchrun(2, [*common, f"output_dir={reference}"])
    # CP 2 x DP 2: stop after step 1 (a checkpoint), then resume on two processes at CP 1 x DP 2
    _torchrun(4, [*common, f"output_dir={sharded}", "parallel.context_parallel_size=2", "debug.stop_after_steps=1"])
    assert json.loads((sharded / "run_info.json").read_text())["world_size"] == 4
    assert (sharded / "checkpoint-1").is_dir() and not (sharded / "final").exists()
    first = _steps(sharded)
    assert sorted(first) == [1]
    _torchrun(2, [*common, f"output_dir={sharded}"])
    ref, got = _steps(reference), _steps(sharded)
    assert sorted(ref) == sorted(got) == [1, 2]
    for step in (1, 2):
        assert got[step]["loss"] == pytest.approx(ref[step]["loss"], rel=1e-6), step  # logged in float32
        assert got[step]["grad_norm"] == pytest.approx(ref[step]["grad_norm"], rel=1e-9), step
    _assert_same_weights(reference, sharded)
    shutil.rmtree(tmp_path)


# ~50 s: two torchrun launches (1 and 2 processes). DeepSpeed ZeRO-3 partitions the weights over all CP x DP
# ranks and gathers them inside the sharded Mamba-2 / cross-attention code (parameters read outside their
# module's forward); its all-rank gradient average is the CP mean (vamba.parallel.comm)
@pytest.mark.slow
def test_zero3_at_cp2_equals_zero3_at_cp1(train_overrides, tmp_path) -> None:
    pytest.importorskip("deepspeed")
    common = [o for o in train_overrides if not o.startswith(("output_dir=", "optim.global_batch_size="))]
    common += ["model.dtype=float64", "optim.global_batch_size=2", "optim.max_steps=2", "logging.save_steps=2",
               "deepspeed=zero3"]
    one, two = tmp_path / "z3_cp1", tmp_path / "z3_cp2"
    _torchrun(1, [*common, f"output_dir={one}"])
    _torchrun(2, [*common, f"output_dir={two}", "parallel.context_parallel_size=2"])
    a, b = _steps(one), _steps(two)
    assert sorted(a) == sorted(b) == [1, 2]
    for step in (1, 2):
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], rel=1e-6), step
        # DeepSpeed steps the optimizer inside the backward: the step hooks still time it apart
        assert a[step]["optimizer_s"] > 0 and a[step]["backward_s"] > 0 and a[step]["forward_s"] > 0, a[step]
    wa, wb = load_file(str(one / "final" / "model.safetensors")), load_file(str(two / "final" / "model.safetensors"))
    worst = {key: float((wb[key] - wa[key]).abs().max() / wa[key].abs().max().clamp(min=1e-30)) for key in wa}
    # DeepSpeed reduces and steps in float32; key biases (zero gradient in exact arithmetic, see above) hold
    # rounding noise that Adam scales up to ~lr * noise / eps
    assert max(v for k, v in worst.items() if ".k_proj.bias" not in k) < 1e-5, worst
    assert max(float((wb[k] - wa[k]).abs().max()) for k in wa if ".k_proj.bias" in k) < 1e-4
    shutil.rmtree(tmp_path)
