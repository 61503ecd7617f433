"""``logging=wandb`` bounds ``wandb.init`` (WANDB_INIT_TIMEOUT): with an API key and no network it hung > 60 s."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def test_wandb_gets_an_init_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from vamba.training.config import TrainConfig
    from vamba.training.run import training_arguments

    for name in ("WANDB_INIT_TIMEOUT", "WANDB_PROJECT", "WANDB_DIR", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    cfg = TrainConfig()
    cfg.logging.report_to = ["wandb"]
    cfg.logging.wandb_init_timeout = 7
    training_arguments(cfg, tmp_path)
    assert os.environ["WANDB_INIT_TIMEOUT"] == "7"
    import wandb

    settings = wandb.Settings()
    settings.update_from_env_vars(dict(os.environ))  # as wandb.init reads its environment
    assert settings.init_timeout == 7
