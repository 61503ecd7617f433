"""Resume (docs/training.md): exact past epoch boundaries and with packing, checkpoints complete or absent when a
real `vamba train` process is killed during a save, never a silent partial load, each step once in log.jsonl.

Tiny runs: 4 samples, 2 optimizer steps per epoch, random frame sampling (frames differ per epoch)."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from tests.training.conftest import compose_config
from vamba.data.dataset import VambaDataset
from vamba.models.loading import IncompatibleCheckpointError
from vamba.training.checkpoints import STAGING, latest_checkpoint, publish
from vamba.training.resume_settings import ResumeSettingsError
from vamba.training.run import train
from vamba.utils.io import read_jsonl

MAX_STEPS = 5


@pytest.fixture
def four_samples(synth, train_overrides, tmp_path) -> list[str]:
    """Overrides for 4 video samples, batch 2: 2 steps per epoch, 5 steps in all (epochs 0, 1 and half of 2)."""
    mix = tmp_path / "four.yaml"
    mix.write_text(f"seed: 0\nsources:\n  - {{name: v, format: llava, path: {synth / 'llava_video.json'}, "
                   f"num_samples: 4}}\n")
    return [*(o for o in train_overrides if not o.startswith(("data.mixture=", "output_dir="))), f"data.mixture={mix}",
            "data.sampling=random", f"optim.max_steps={MAX_STEPS}", "logging.save_steps=100"]


class EpochProbe(TrainerCallback):
    """At each step's start: the epoch with which the dataset draws its random frames, and the Trainer's epoch
    (the step's index over the loader's batches per epoch)."""

    def __init__(self) -> None:
        self.steps_per_epoch = 0
        self.seen: dict[int, tuple[int, int]] = {}

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.steps_per_epoch = len(train_dataloader) // args.gradient_accumulation_steps

    def on_step_begin(self, args, state, control, train_dataloader=None, **kwargs):
        dataset = train_dataloader.dataset
        while not isinstance(dataset, VambaDataset):
            dataset = dataset.dataset
        self.seen[state.global_step + 1] = (dataset.epoch, state.global_step // self.steps_per_epoch)


def _log(run_dir: Path) -> list[dict]:
    return [r for r in read_jsonl(run_dir / "log.jsonl") if "loss" in r]


def _run(overrides: list[str], out: Path, *extra: str) -> EpochProbe:
    probe = EpochProbe()
    train(compose_config(*overrides, f"output_dir={out}", *extra), callbacks=[probe])
    for step, (data_epoch, trainer_epoch) in probe.seen.items():
        assert data_epoch == trainer_epoch, f"step {step}: the dataset draws frames of epoch {data_epoch}, the " \
                                            f"Trainer is in epoch {trainer_epoch}"
    return probe


@pytest.mark.parametrize("variant, stops", [
    ([], (1, 2, 3)),  # inside epoch 0, at its end, inside epoch 1
    # 2 rows of 2 samples, one row per step, the rows read by a worker process
    (["data.packing=true", "data.text_budget=200", "data.video_budget=100", "optim.per_device_batch_size=1",
      "optim.global_batch_size=1", "data.num_workers=1"], (3,)),
], ids=["samples", "packed_rows_with_a_worker"])
def test_resume_on_both_sides_of_an_epoch_boundary_reproduces_every_loss(four_samples, tmp_path, variant,
                                                                         stops) -> None:
    overrides = [*four_samples, *variant]
    straight = _run(overrides, tmp_path / "straight")
    assert straight.steps_per_epoch == 2 and len(straight.seen) == MAX_STEPS  # the runs cross two boundaries
    expected = {r["step"]: r for r in _log(tmp_path / "straight")}
    assert sorted(expected) == list(range(1, MAX_STEPS + 1))
    for stop in stops:
        out = tmp_path / f"stop{stop}"
        _run(overrides, out, f"debug.stop_after_steps={stop}")
        resumed = _run(overrides, out)
        assert sorted(resumed.seen) == list(range(stop + 1, MAX_STEPS + 1))  # the second run started there
        log = _log(out)
        assert [r["step"] for r in log] == list(range(1, MAX_STEPS + 1)), "each step once in log.jsonl"
        for r in log:  # CPU, fp32, one process: bit-exact
            want = expected[r["step"]]
            assert (r["loss"], r["learning_rate"], r["grad_norm"]) == \
                   (want["loss"], want["learning_rate"], want["grad_norm"]), (stop, r["step"])
        info = json.loads((out / "run_info.json").read_text())
        assert info["resumed_from"] == str(out / f"checkpoint-{stop}")
        assert not (out / STAGING).exists()


def test_resume_with_lora_restores_the_modules_trained_beside_the_adapters(four_samples, tmp_path) -> None:
    # LoRA on the decoder, the merger in full: the Trainer's checkpoint holds the adapters only.
    overrides = [*four_samples, "stage=sft", "stage.lora.enable=true", "stage.lora.r=4",
                 "stage.lora.train_in_full=[visual.merger.*]", "optim.max_steps=3"]
    train(compose_config(*overrides, f"output_dir={tmp_path / 'straight'}"))
    train(compose_config(*overrides, f"output_dir={tmp_path / 'resumed'}", "debug.stop_after_steps=2"))
    assert (tmp_path / "resumed" / "checkpoint-2" / "outside_adapters.safetensors").is_file()
    train(compose_config(*overrides, f"output_dir={tmp_path / 'resumed'}"))
    assert [r["loss"] for r in _log(tmp_path / "resumed")] == [r["loss"] for r in _log(tmp_path / "straight")]


def test_resume_from_a_checkpoint_missing_a_tensor_fails_naming_it(four_samples, tmp_path) -> None:
    out = tmp_path / "run"
    train(compose_config(*four_samples, f"output_dir={out}", "debug.stop_after_steps=1"))
    weights = out / "checkpoint-1" / "model.safetensors"
    tensors = load_file(weights)
    gone = "model.layers.0.cross_attn.q_proj.weight"
    del tensors[gone]
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(IncompatibleCheckpointError, match=f"checkpoint-1 does not fit .*missing keys: {gone}"):
        train(compose_config(*four_samples, f"output_dir={out}"))
    weights.write_bytes(b"")  # and a file cut to nothing: named, and called truncated (resume=auto skips that
    # checkpoint with this warning: tests/training/test_run_dir.py)
    with pytest.raises(ValueError, match=f"{weights} is truncated"):
        train(compose_config(*four_samples, f"output_dir={out}", f"resume={out / 'checkpoint-1'}"))


# -- a real `vamba train` process killed (SIGKILL) during its saves ---------------------------------------------

def _vamba_train(argv: list[str], log: str) -> None:
    """The child process: `vamba train <argv>` through the CLI entry, its output appended to ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from vamba.cli import main

    sys.exit(main(["train", *argv]))


def _cli_processes():
    """A forkserver whose server has imported torch, transformers and vamba once: each `vamba train` process is a
    fork of it that imported nothing yet ran nothing (no thread pools), which starts in a fraction of a second
    instead of a fresh interpreter's import time. Same code path as the installed `vamba` script."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["vamba.cli", "vamba.training.cli", "vamba.training.run", "tests.training.test_resume"])
    return ctx


def _kill_when_written(ctx, argv: list[str], log: Path, out: Path, checkpoint: str, name: str) -> None:
    """Start `vamba train` and SIGKILL it as soon as file ``name`` of ``checkpoint`` exists, staged or in place
    (polling the filesystem)."""
    proc = ctx.Process(target=_vamba_train, args=(argv, str(log)))
    proc.start()
    deadline = time.monotonic() + 300  # a bound against a hang, not a timing assumption
    files = (out / STAGING / checkpoint / name, out / checkpoint / name)
    while not any(f.exists() for f in files):
        if not proc.is_alive():
            pytest.fail(f"the run ended (exit {proc.exitcode}) before {name} of {checkpoint} appeared:\n"
                        f"{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{name} of {checkpoint} did not appear:\n{log.read_text()[-3000:]}")
        time.sleep(0)  # yield only
    proc.kill()
    proc.join()
    assert proc.exitcode in (-signal.SIGKILL, 0)  # (0: it finished before the signal landed)
    staged = files[0].parent
    print(f"killed at {name} of {checkpoint}: staged {sorted(p.name for p in staged.iterdir())}" if staged.exists()
          else f"killed at {name} of {checkpoint}: already published")


def test_a_kill_during_a_save_leaves_a_run_that_the_same_command_resumes(four_samples, tmp_path) -> None:
    out, log = tmp_path / "run", tmp_path / "train.log"
    argv = [*(o for o in four_samples if o != "logging.save_steps=100"), f"output_dir={out}", "logging.save_steps=1",
            "logging.save_total_limit=null"]
    ctx = _cli_processes()
    # The same command five times: killed as the save of step 1 writes the weights, as step 2's writes the
    # optimizer state, as step 3's writes the Trainer state (the Trainer's last file), as step 4's writes the
    # processor (the last file of all), then left to finish. Each run must resume from the last complete
    # checkpoint the kill left (or start anew) and no checkpoint may be partial.
    points = ((1, "model.safetensors"), (2, "optimizer.pt"), (3, "trainer_state.json"), (4, "processor_config.json"))
    for point in (*points, None):
        before = latest_checkpoint(out)
        if point is None:
            proc = ctx.Process(target=_vamba_train, args=(argv, str(log)))
            proc.start()
            proc.join()
            assert proc.exitcode == 0, log.read_text()[-3000:]
        else:
            _kill_when_written(ctx, argv, log, out, f"checkpoint-{point[0]}", point[1])
        info = json.loads((out / "run_info.json").read_text())
        assert info["resumed_from"] == (None if before is None else str(before))
        for ckpt in out.glob("checkpoint-*"):
            assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
                    "tokenizer_config.json", "processor_config.json"} <= {p.name for p in ckpt.iterdir()}, \
                f"{ckpt} is incomplete"
    assert (out / "final" / "model.safetensors").is_file() and not (out / STAGING).exists()
    log_records = _log(out)
    assert [r["step"] for r in log_records] == list(range(1, MAX_STEPS + 1)), "each step once in log.jsonl"
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log_records)


def test_resume_auto_skips_an_incomplete_checkpoint_naming_it(tmp_path, caplog) -> None:
    # as left by a save before saves were staged, or by a copy cut short
    for step, files in ((2, ["trainer_state.json", "model.safetensors"]), (4, ["model.safetensors"])):
        (tmp_path / f"checkpoint-{step}").mkdir()
        for name in files:
            path = tmp_path / f"checkpoint-{step}" / name
            if name == "trainer_state.json":  # (its files must parse: tests/training/test_run_dir.py)
                path.write_text(json.dumps({"global_step": step}))
            else:
                save_file({"w": torch.zeros(1)}, str(path))
    (tmp_path / STAGING / "checkpoint-6").mkdir(parents=True)
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert f"skipping incomplete checkpoint {tmp_path / 'checkpoint-4'}" in caplog.text


def test_publish_replaces_an_older_checkpoint_of_the_same_step(tmp_path) -> None:
    # a run resumed from an earlier checkpoint saves step N again
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "old.txt").write_text("old")
    staged = tmp_path / STAGING / "checkpoint-4"
    staged.mkdir(parents=True)
    (staged / "new.txt").write_text("new")
    publish(staged, tmp_path / "checkpoint-4")
    assert [p.name for p in (tmp_path / "checkpoint-4").iterdir()] == ["new.txt"]
    assert not (tmp_path / STAGING).exists()


def test_rerunning_a_finished_command_trains_nothing_and_a_higher_max_steps_continues(train_overrides) -> None:
    """The same command again after it finished: the Trainer, resumed at its last step, trained one step more and
    overwrote final/. Now nothing changes; raising optim.max_steps continues from the last checkpoint."""
    cfg = compose_config(*train_overrides, "optim.max_steps=2", "logging.save_steps=1")
    out = Path(cfg.output_dir)
    train(cfg)
    log, weights = (out / "log.jsonl").read_text(), (out / "final" / "model.safetensors").read_bytes()
    again = train(compose_config(*train_overrides, "optim.max_steps=2", "logging.save_steps=1"))
    assert again.log_history == [] and (out / "log.jsonl").read_text() == log
    assert (out / "final" / "model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    train(compose_config(*train_overrides, "optim.max_steps=3", "logging.save_steps=1"))
    steps = [r for r in read_jsonl(out / "log.jsonl") if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    # the third step ran at the 3-step schedule's rate for it, as a run planned with 3 steps does, not at the end of
    # the 2-step schedule (0.0: the optimizer's rate the checkpoint restored)
    others = [o for o in train_overrides if not o.startswith("output_dir=")]
    planned = train(compose_config(*others, "optim.max_steps=3", f"output_dir={out}_planned"))
    rates = [r["learning_rate"] for r in read_jsonl(out.with_name(out.name + "_planned") / "log.jsonl") if "loss" in r]
    assert planned.log_history and steps[2]["learning_rate"] == rates[2] > 0

    # a resume with another setting than the run's is refused before anything is written, naming it
    with pytest.raises(ResumeSettingsError, match=r"data.num_frames: was 4, now 2.*optim.lr: was 0.001, now 0.01"):
        train(compose_config(*others, f"output_dir={out}", "optim.max_steps=4", "logging.save_steps=1",
                             "optim.lr=1e-2", "data.num_frames=2"))
    assert [r["step"] for r in read_jsonl(out / "log.jsonl") if "loss" in r] == [1, 2, 3]
    assert "max_steps: 3" in (out / "config.yaml").read_text()
