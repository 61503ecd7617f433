"""A checkpoint whose pickles would run code is refused before DeepSpeed or the Trainer unpickles it (issue 28
item 5), while the files our own runs write (ZeRO optimizer states, RNG states, the scheduler) pass."""
from __future__ import annotations

import os
import pathlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vamba.training.safe_load import UntrustedCheckpointError, check_checkpoint_pickles

REPO = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this creates ``marker``: what a hostile checkpoint would do with os.system instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"optimizer_state_dict": {"state": {}}, "hook": Payload(marker)}, path)


def test_a_pickle_that_runs_code_is_refused_naming_the_file(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "checkpoint-2" / "global_step2" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    _plant(bad, marker)
    torch.load(bad, weights_only=False)  # the payload works: this is what DeepSpeed's own load would do
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UntrustedCheckpointError, match="zero_pp_rank_0_mp_rank_00_optim_states.pt"):
        check_checkpoint_pickles(tmp_path / "checkpoint-2")
    assert not marker.exists()


def test_what_our_checkpoints_hold_passes(tmp_path: Path) -> None:
    """The globals of a real ZeRO-2 checkpoint of `vamba train` (deepspeed 0.19, written on CPU) beside the
    Trainer's RNG state (numpy) and scheduler."""
    deepspeed = pytest.importorskip("deepspeed")  # noqa: F841
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    ckpt = tmp_path / "checkpoint-2"
    (ckpt / "global_step2").mkdir(parents=True)
    torch.save({"optimizer_state_dict": {"loss_scaler": LossScaler(1.0), "zero_stage": ZeroStageEnum.gradients,
                                         "param_slice_mappings": [{"w": fragment_address(numel=4, start=0)}],
                                         "single_partition_of_fp32_groups": [torch.zeros(4)]}},
               ckpt / "global_step2" / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    torch.save({"module": {"w": torch.ones(2)}}, ckpt / "global_step2" / "mp_rank_00_model_states.pt")
    torch.save({"python": (3, tuple(range(5)), None), "numpy": np.random.get_state(), "cpu": torch.get_rng_state()},
               ckpt / "rng_state_0.pth")
    torch.save({"last_epoch": 2}, ckpt / "scheduler.pt")
    torch.save(Payload(tmp_path / "never"), ckpt / "training_args.bin")  # never loaded by a resume: not scanned
    assert check_checkpoint_pickles(ckpt) == 4


@pytest.mark.slow
def test_zero2_resume_refuses_a_planted_payload(tmp_path: Path) -> None:
    """2-rank ZeRO-2 on gloo: the saved checkpoint resumes, the same with a payload planted in rank 0's optimizer
    states stops both ranks before DeepSpeed unpickles it (which ran it before this check)."""
    pytest.importorskip("deepspeed")
    import subprocess

    from tests.training.conftest import TINY
    from vamba.data.synth import SynthConfig, generate

    synth = tmp_path / "synth"
    generate(SynthConfig(out=str(synth), num_videos=4, num_images=4, num_bench_videos=1, min_frames=16,
                         max_frames=24, seed=0))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561", "-m",
           "vamba.cli", "train", f"data.mixture={synth / 'mixture.yaml'}", f"data.tokenizer={synth / 'tokenizer'}",
           "data.num_frames=4", f"output_dir={out}", "device=cpu", "optim.per_device_batch_size=1",
           "optim.global_batch_size=2", "optim.warmup_ratio=0", "logging.progress=false", *TINY, "deepspeed=zero2",
           "optim.max_steps=3", "logging.save_steps=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    first = subprocess.run([*cmd, "debug.stop_after_steps=2"], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert check_checkpoint_pickles(out / "checkpoint-2") >= 4  # our own ZeRO-2 files pass
    marker = tmp_path / "pwned"
    _plant(out / "checkpoint-2" / "global_step2" / "zero_pp_rank_0_mp_rank_00_optim_states.pt", marker)
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode != 0 and not marker.exists()
    assert "zero_pp_rank_0_mp_rank_00_optim_states.pt: refused before resuming" in second.stderr
