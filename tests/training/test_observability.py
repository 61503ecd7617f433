"""What a run tells its user and leaves behind: the run directory only for a valid config, the start-up summary,
the invocation history, the console log and plots, the load summary, the validation loss."""
from __future__ import annotations

from pathlib import Path

import pytest

from vamba.training.cli import main as train_main


def _without(overrides: list[str], prefix: str) -> list[str]:
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
