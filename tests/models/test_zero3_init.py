"""Cross-attention initialisation from self-attention under real DeepSpeed ZeRO-3 (parameters partitioned)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

HERE = Path(__file__).parent


@pytest.mark.slow
def test_cross_attn_init_under_zero3_partitioning(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29613",
           str(HERE / "zero3_init_worker.py"), str(out), str(HERE)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["partitioned"], "zero.Init did not partition the cross-attention parameters"
    assert result["equal"] == [True, True]
