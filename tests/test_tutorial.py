"""docs/tutorial.md runs as printed: every ```bash block, in order, in one bash process in an empty folder, as a
newcomer would paste them (the install line is the README's, which CI itself runs: .ci/run)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_tutorial_runs_as_printed(tmp_path: Path) -> None:
    page = (ROOT / "docs/tutorial.md").read_text()
    install = re.search(r"```sh\n(.+?)\n```", page, flags=re.S).group(1)
    assert install in (ROOT / "README.md").read_text(), "the tutorial's install line must be the README's"
    blocks = re.findall(r"```bash\n(.+?)\n```", page, flags=re.S)
    assert len(blocks) >= 10
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + "\n".join(blocks)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    # what the page says each step shows
    assert "verdict:" in proc.stdout  # vamba doctor
    assert {p.name for p in (tmp_path / "runs/pt").iterdir()} >= {"config.yaml", "console.log", "log.jsonl",
                                                                  "loss.png", "run_info.json", "final"}
    assert "samples cached in" in proc.stdout
    assert "data.num_frames: cache 16, this run 8" in out  # the refused cache (the `!` line)
    assert not (tmp_path / "runs/pt_8f").exists()  # refused before its run directory was made
    assert "resuming from runs/sft/checkpoint-2" in out
    assert re.search(r"LoRA: trainable [\d,]+ / [\d,]+ parameters .*in full 0", out)
    assert "NOT comparable" in out
    assert (tmp_path / "runs/eval/lvbench/vamba/sft-final/report.md").is_file()
    assert (tmp_path / "runs/eval/lvbench/vamba/sft_lora-final/report.md").is_file()
    assert "sft-final" in proc.stdout and "sft_lora-final" in proc.stdout  # vamba compare names its arms
    assert "sbatch" in (tmp_path / "runs/ablation_mixer/launch/submit_slurm.sh").read_text()
