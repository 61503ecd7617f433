"""The context-parallel benchmark's logic on the CPU (scripts/bench_context_parallel.py: tiny model, 2 ranks over
gloo): each rank writes its step times and status, and merge gathers the parts. A check of the script, not a
measurement; its correctness checks are GPU tests (tests/gpu/test_context_parallel_gpu.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.parallel.test_context_parallel import free_port
from vamba.bench.context_parallel import main

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_context_parallel.py"


@pytest.mark.slow
def test_measure_two_ranks_and_merge_on_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "cp_stage1_8f.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(SCRIPT), "measure", "--device", "cpu", "--scale", "tiny",
           "--mode", "stage1", "--frames", "8", "--text", "16", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [tmp_path / f"cp_stage1_8f.rank{r}.json" for r in (0, 1)]
    for r, path in enumerate(ranks):
        result = json.loads(path.read_text())
        assert result["status"] == "ok" and result["world_size"] == 2 and len(result["step_s"]) == 2, result
        assert result["local_temporal_patches"] == 2 and result["date"] and result["environment"]
    merged = tmp_path / "merged.json"
    assert main(["merge", "--out", str(merged), *map(str, ranks)]) == 0
    assert sorted(json.loads(merged.read_text())["parts"]) == ["cp_stage1_8f.rank0", "cp_stage1_8f.rank1"]
