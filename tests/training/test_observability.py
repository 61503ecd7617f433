"""What a run tells its user and leaves behind: the run directory only for a valid config, the start-up summary,
the invocation history, the console log and plots, the load summary, the validation loss."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from vamba.training.cli import main as train_main
from vamba.utils.io import read_jsonl


def _without(overrides: list[str], prefix: str | tuple[str, ...]) -> list[str]:
    return [o for o in overrides if not o.startswith(prefix)]


def test_a_config_that_fails_validation_leaves_no_run_directory(train_overrides, tmp_path, monkeypatch,
                                                                 capsys) -> None:
    """Hydra made runs/train/<date>/ (and wrote .hydra/ into it) before the config was validated."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:  # the default output_dir, runs/train/<date>
        train_main([*_without(train_overrides, "output_dir="), "data.mixture=/missing.yaml"])
    assert e.value.code == 2 and "data.mixture='/missing.yaml'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists(), sorted(str(p) for p in (tmp_path / "runs").rglob("*"))
    with pytest.raises(SystemExit):  # a typed value that validation refuses
        train_main([*train_overrides, "optim.warmup_ratio=2"])
    assert not Path(next(o for o in train_overrides if o.startswith("output_dir=")).split("=", 1)[1]).exists()


def _small_mixture(synth: Path, out: Path) -> Path:
    """3 samples of the synthetic set (2 captions, 1 video conversation)."""
    out.write_text(f"seed: 0\nsources:\n"
                   f"  - {{name: captions, format: caption, path: {synth / 'captions.jsonl'}, num_samples: 2}}\n"
                   f"  - {{name: video_qa, format: llava, path: {synth / 'llava_video.json'}, num_samples: 1}}\n")
    return out


def test_summary_history_console_log_and_curves(train_overrides, synth, tmp_path) -> None:
    """A global batch of 16 over 9 samples made every step an epoch without a word; a resumed run's
    run_info.json kept only the last invocation; nothing of the console reached the run directory."""
    mixture = _small_mixture(synth, tmp_path / "small.yaml")
    run = [*_without(train_overrides, ("optim.global_batch_size=", "data.mixture=", "optim.per_device_batch_size=")),
           f"data.mixture={mixture}", "optim.global_batch_size=4", "optim.per_device_batch_size=1",
           "optim.max_steps=2", "logging.save_steps=1"]
    assert train_main([*run, "debug.stop_after_steps=1"]) == 0
    assert train_main(run) == 0
    out = Path(next(o for o in train_overrides if o.startswith("output_dir=")).split("=", 1)[1])
    info = json.loads((out / "run_info.json").read_text())
    assert [i["resumed_from_step"] for i in info["invocations"]] == [None, 1]
    assert info["resumed_from"].endswith("checkpoint-1") and info["invocations"][0]["argv"][-1] == "debug.stop_after_steps=1"
    summary = info["invocations"][1]["summary"]
    assert summary == info["summary"] and info["invocations"][0]["summary"]["total_steps"] == 2
    assert summary["samples"] == 3 and summary["samples_per_source"] == {"captions": 2, "video_qa": 1}
    assert summary["global_batch"] == 4 and summary["gradient_accumulation"] == 4 and summary["world_size"] == 1
    assert summary["micro_batches_per_epoch"] == 3 and summary["steps_per_epoch"] == 1
    assert summary["total_steps"] == 2 and summary["epochs"] == 2 and summary["trainable"].startswith("trainable ")
    assert "every optimizer step is a whole epoch" in summary["warnings"][0]
    console = (out / "console.log").read_text()
    assert console.count("run summary:") == 2 and "whole epoch" in console and "resuming from" in console
    assert "step 2: {" in console and "'loss':" in console
    # step metrics of the launched command (docs/training.md, "Speed"): each invocation's first step says how long
    # the process took to get there; every step how long it waited for data and how many model FLOPs it did
    steps = [r for r in read_jsonl(out / "log.jsonl") if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(r["startup_s"] > 0 for r in steps)
    assert all(0 <= r["data_wait_frac"] < 1 and r["model_tflops"] > 0 for r in steps), steps
    # where a step's time went: forward, backward, the optimizer's step (each ended by a device synchronisation)
    for r in steps:
        phases = [r["forward_s"], r["backward_s"], r["optimizer_s"]]
        assert all(p > 0 for p in phases) and sum(phases) <= r["step_s"] and "teacher_s" not in r, r
    assert "mfu" not in steps[0]  # the CPU has no peak rate to divide by
    pytest.importorskip("matplotlib")
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_are_skipped_with_a_message_without_matplotlib(tmp_path, monkeypatch, caplog) -> None:
    from vamba.training.observe import write_curves

    for name in ["matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg",
                 *(m for m in sys.modules if m.startswith("matplotlib."))]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed (an earlier test may have imported it)
    (tmp_path / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    with caplog.at_level(logging.INFO, logger="vamba"):
        assert write_curves(tmp_path) is None
    assert not (tmp_path / "loss.png").exists()
    assert "loss.png not drawn: matplotlib is not installed (pip install matplotlib)" in caplog.text


def test_a_validation_split_logs_the_held_out_loss(train_overrides, synth, tmp_path) -> None:
    """data.val_fraction holds the last samples of the mixture out of training; eval_loss (the LM loss of the model
    at that step on them) goes to log.jsonl every logging.eval_steps and at the end."""
    import torch

    from tests.training.conftest import compose_config
    from vamba.data.collate import Collator
    from vamba.models import VambaForConditionalGeneration
    from vamba.training.build import build_dataset, build_eval_dataset, load_tokenizer
    from vamba.utils.io import read_jsonl

    mixture = _small_mixture(synth, tmp_path / "small.yaml")
    run = [*_without(train_overrides, ("data.mixture=", "optim.global_batch_size=")), f"data.mixture={mixture}",
           "optim.global_batch_size=2", "optim.max_steps=3", "logging.eval_steps=2", "data.val_fraction=0.34"]
    assert train_main(run) == 0
    out = Path(next(o for o in train_overrides if o.startswith("output_dir=")).split("=", 1)[1])
    evals = {r["step"]: r["eval_loss"] for r in read_jsonl(out / "log.jsonl") if "eval_loss" in r}
    assert sorted(evals) == [2, 3]  # every 2 steps, and the last one
    summary = json.loads((out / "run_info.json").read_text())["summary"]
    assert summary["samples"] == 2 and summary["validation_samples"] == 1 and summary["eval_steps"] == 2

    cfg = compose_config(*run)
    tok = load_tokenizer(cfg)
    train_keys = {build_dataset(cfg, tok)[i].key for i in range(2)}
    held = build_eval_dataset(cfg, tok)
    assert len(held) == 1 and held[0].key not in train_keys
    model = VambaForConditionalGeneration.from_pretrained(out / "final").eval()
    with torch.no_grad():
        loss = model(**Collator(tok.pad_token_id)([held[0]])).loss
    assert abs(float(loss) - evals[3]) < 1e-4, (float(loss), evals[3])


def test_console_log_copies_warnings_and_keeps_them_on_the_console(tmp_path, capsys) -> None:
    import warnings

    from vamba.training.observe import console_log

    with pytest.raises(ValueError), console_log(tmp_path):
        warnings.warn("frames will be dropped", UserWarning)
        raise ValueError("a broken sample")
    text = (tmp_path / "console.log").read_text()
    assert "UserWarning: frames will be dropped" in text and "ValueError: a broken sample" in text
    assert "frames will be dropped" in capsys.readouterr().err
