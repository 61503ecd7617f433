"""All ranks fail together, promptly, with the first error (issue 28 item 9): 2-rank torchrun on gloo."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["raise", "setup"])
def test_ranks_fail_together(mode: str, tmp_path: Path) -> None:
    port = {"raise": 29571, "setup": 29572}[mode]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(REPO / "tests" / "training" / "fail_worker.py"), mode]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    # Before: the failed rank sat in close_process_group's all-reduce while the other waited in its barrier, both
    # until the 30-minute gloo timeout (the limit here stops the test long before that).
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)
    elapsed = time.monotonic() - started
    assert done.returncode != 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "first error:" in done.stderr
    assert "went on" not in done.stdout
    assert elapsed < 60, elapsed
