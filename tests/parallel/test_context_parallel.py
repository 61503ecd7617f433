"""Context parallelism equals the single-process model: real gloo process groups (torchrun), a tiny float64 VAMBA.

For every case (tests/parallel/cp_worker.py): one long video cut mid-sample, packed samples whose boundaries fall
inside ranks and on rank borders (with a text-only sample and 1-token temporal patches), padded rows of different
video lengths with a text-only row, a batch without video; alpha on and off, cross-attention position embeddings
and layer norm, the eager (reference) and fused (SDPA kernels) cross-attention combine, gradient checkpointing.
Logits, loss and the gradient of every parameter (mean over the group) must equal the single-process ones.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
REPO = HERE.parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(n: int, out: Path, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(HERE / "cp_worker.py"), str(out), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(out.read_text())


def check(results: dict, expected_cases: int) -> None:
    assert len(results) == expected_cases
    for case, r in results.items():
        assert r["same_params"] and r["n_grads"] > 60, case
        assert r["logits"] < 1e-11 and r["loss"] < 1e-11, (case, r)
        assert r["grad"] < 1e-10, (case, r)
        # A_log's gradient goes through the mixer's float32 A = -exp(A_log.float()): float32 rounding per rank
        assert r["grad_A_log"] < 1e-6, (case, r)


# ~35 s on 2 shared cores, most of it the two interpreters starting torch and transformers: one launch for all
# cases
@pytest.mark.slow
def test_two_ranks_equal_one_process(tmp_path: Path) -> None:
    results = run_workers(2, tmp_path / "cp2.json")
    check(results, expected_cases=2 * 5 + 1)
    assert results["alpha_rope_eager/one_video"]["local_tokens"] == 12  # 3 of the 7 temporal patches on rank 0


# ~40 s: four interpreters on 2 cores; only the cases with the most rank borders
@pytest.mark.slow
def test_four_ranks_equal_one_process(tmp_path: Path) -> None:
    results = run_workers(4, tmp_path / "cp4.json", "--quick")
    check(results, expected_cases=2)
