"""One run per run directory (issue 28 items 3, 4 and 11; docs/reliability.md): a lock that a second `vamba train`
meets at once and that dies with its holder, resume=never refused on a used directory (resume=replace moves the old
run aside), default output_dir names that two launches do not share, checkpoints that do not parse skipped."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.training.conftest import compose_config
from tests.training.test_resume import _cli_processes, _vamba_train
from vamba.training.checkpoints import IncompleteCheckpointError, checkpoint_step, latest_checkpoint
from vamba.training.run import train
from vamba.training.rundir import RunDirInUse
from vamba.utils.io import read_jsonl
from vamba.utils.locks import FolderLock

ROOT = Path(__file__).resolve().parents[2]


def _four(synth: Path, train_overrides: list[str], tmp_path: Path) -> list[str]:
    mix = tmp_path / "four.yaml"
    mix.write_text(f"seed: 0\nsources:\n  - {{name: v, format: llava, path: {synth / 'llava_video.json'}, "
                   f"num_samples: 4}}\n")
    return [*(o for o in train_overrides if not o.startswith(("data.mixture=", "output_dir="))), f"data.mixture={mix}"]


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_a_second_vamba_train_on_a_running_directory_fails_at_once_naming_the_first(synth, train_overrides,
                                                                                      tmp_path) -> None:
    """Before: the second run removed the first's checkpoint in progress (.staging/) and rewrote its log."""
    out = tmp_path / "run"
    argv = [*_four(synth, train_overrides, tmp_path), f"output_dir={out}", "optim.max_steps=100000",
            "logging.save_steps=100000"]
    ctx = _cli_processes()
    first = ctx.Process(target=_vamba_train, args=(argv, str(tmp_path / "first.log")))
    first.start()
    try:
        deadline = time.monotonic() + 120
        while f'"pid": {first.pid}' not in _read(out / ".lock"):  # the first run holds the directory
            assert first.is_alive(), (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.05)
        # the second run: this test's process, on the same command (the CLI path exits 2 with this message)
        started = time.monotonic()
        with pytest.raises(RunDirInUse, match=f'used by a running `vamba train` by another process: {{"pid": '
                                              f'{first.pid}, "host"'):
            train(compose_config(*argv))
        assert time.monotonic() - started < 10  # at once, before anything is built
        assert first.is_alive()
    finally:
        first.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
        first.join()
    with FolderLock(out):  # not stale after kill -9
        pass


def test_resume_never_refuses_a_used_directory_and_replace_moves_the_old_run_aside(synth, train_overrides,
                                                                                     tmp_path) -> None:
    """Before: resume=never overwrote final/ and checkpoint-1, truncated log.jsonl and kept checkpoint-2 of the old
    run, which a later resume=auto continued."""
    out = tmp_path / "run"
    base = [*_four(synth, train_overrides, tmp_path), f"output_dir={out}", "logging.save_steps=1",
            "logging.save_total_limit=null"]
    train(compose_config(*base, "optim.max_steps=2"))
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".lock"}
    with pytest.raises(RunDirInUse, match=r"holds a run \(checkpoint-1, checkpoint-2, final, log.jsonl\)"
                                          r".*resume=replace"):
        train(compose_config(*base, "optim.max_steps=1", "resume=never"))
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".lock"} == before  # nothing touched
    assert [r["step"] for r in read_jsonl(out / "log.jsonl") if "loss" in r] == [1, 2]

    train(compose_config(*base, "optim.max_steps=1", "resume=replace"))
    aside = next(out.glob("replaced-*"))
    assert {"checkpoint-1", "checkpoint-2", "final", "log.jsonl", "console.log", "config.yaml",
            "run_info.json"} <= {p.name for p in aside.iterdir()}  # console.log used to gather both runs' lines
    assert (out / "console.log").is_file()  # the new run's own
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert [r["step"] for r in read_jsonl(out / "log.jsonl") if "loss" in r] == [1]
    assert latest_checkpoint(out) == out / "checkpoint-1"  # resume=auto continues the new run, not the old


def test_a_finished_run_without_checkpoints_is_not_trained_over(synth, train_overrides, tmp_path) -> None:
    """Before: with logging.save_steps=0 (no checkpoints) the same command run again trained anew and overwrote
    final/ without a word."""
    out = tmp_path / "run"
    base = [*_four(synth, train_overrides, tmp_path), f"output_dir={out}", "logging.save_steps=0", "optim.max_steps=1"]
    train(compose_config(*base))
    assert (out / "final").is_dir() and latest_checkpoint(out) is None
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".lock"}
    with pytest.raises(RunDirInUse, match=r"finished run \(final/\) and no checkpoint.*resume=replace"):
        train(compose_config(*base))
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".lock"} == before  # nothing touched
    train(compose_config(*base, "resume=replace"))
    assert (out / "final").is_dir() and next(out.glob("replaced-*/final")).is_dir()


def test_a_config_error_after_the_run_started_leaves_no_directory_it_made(synth, train_overrides, tmp_path,
                                                                        capsys) -> None:
    """A pattern that matches no parameter is found once the model is built, after config.yaml, run_info.json,
    console.log and the lock were written: the directory this command made goes with them. One that was there
    before keeps what it held."""
    from vamba.training.cli import main as train_main

    def refused(argv: list[str]) -> None:
        with pytest.raises(SystemExit) as e:
            train_main(argv)
        assert e.value.code == 2

    base = [*_four(synth, train_overrides, tmp_path), "optim.max_steps=1", "stage.trainable=[no_such_module]"]
    out = tmp_path / "new"
    refused([*base, f"output_dir={out}"])
    err = capsys.readouterr().err
    assert "stage.trainable: trainable pattern(s) ['no_such_module'] match no parameter" in err
    assert f"{out} removed: this command made it and trained nothing" in err and not out.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    refused([*base, f"output_dir={mine}"])
    assert "removed" not in capsys.readouterr().err and (mine / "notes.txt").read_text() == "keep"
    assert (mine / "config.yaml").is_file()  # the run's own record stays beside the user's files
    empty = tmp_path / "empty"  # made by the user: it stays, even with nothing of theirs in it
    empty.mkdir()
    refused([*base, f"output_dir={empty}"])
    assert empty.is_dir()
    # the same command, fixed, runs in the same place
    assert train_main([*base[:-1], f"output_dir={out}"]) == 0 and (out / "final").is_dir()


def test_two_launches_in_the_same_second_get_different_default_output_dirs(tmp_path) -> None:
    """Before: runs/train/<date>_<time to the second>: two launches in one second shared a directory."""
    code = ("from hydra import compose, initialize_config_dir\n"
            "from vamba.training.cli import CONFIG_DIR\nfrom vamba.training.config import register\n"
            "register()\n"
            "with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base='1.3'):\n"
            "    print(compose(config_name='train').output_dir)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    names = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs) and all(n.startswith("runs/train/") for n in names), names
    assert names[0] != names[1], names
    # every rank of one torchrun names the same directory: its launcher's start and pid
    torchrun = {**env, "TORCHELASTIC_RUN_ID": "x", "LOCAL_RANK": "0"}
    ranks = subprocess.run(f"{sys.executable} -c \"{code}\" & {sys.executable} -c \"{code}\"; wait", shell=True,
                           env=torchrun, stdout=subprocess.PIPE, text=True, check=True).stdout.split()
    assert len(ranks) == 2 and ranks[0] == ranks[1], ranks


def _checkpoint(path: Path, step: int) -> None:
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    save_file({"w": torch.zeros(2)}, str(path / "model.safetensors"))


@pytest.mark.parametrize("damage", ["cut trainer_state", "no global_step", "weights cut", "header of another shape"])
def test_resume_auto_skips_a_checkpoint_whose_files_do_not_parse(tmp_path, caplog, damage) -> None:
    """Before: a truncated trainer_state.json counted as complete and failed the resume with a bare JSONDecodeError;
    a weights header of valid JSON but another shape with a TypeError."""
    _checkpoint(tmp_path / "checkpoint-1", 1)
    _checkpoint(tmp_path / "checkpoint-2", 2)
    bad = tmp_path / "checkpoint-2"
    state, weights = bad / "trainer_state.json", bad / "model.safetensors"
    if damage == "cut trainer_state":
        state.write_text(state.read_text()[:7])
    elif damage == "no global_step":
        state.write_text("[]")
    elif damage == "weights cut":
        weights.write_bytes(weights.read_bytes()[:-3])
    else:
        header = json.dumps({"w": [1, 2]}).encode()
        weights.write_bytes(len(header).to_bytes(8, "little") + header)
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-1"
    assert f"skipping incomplete checkpoint {bad}" in caplog.text
    with pytest.raises(IncompleteCheckpointError, match=f"cannot resume from {bad}: .*"
                                                        f"({'trainer_state.json' if 'state' in damage or 'step' in damage else 'model.safetensors'})"):
        checkpoint_step(bad)
