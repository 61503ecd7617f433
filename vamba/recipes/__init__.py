"""Whole pipelines over the layers below: the CPU demo (``demo``: synthetic data -> teacher -> conversion -> two
training stages -> evaluation) and the miniature ablations (``ablation``: the demo's recipe per variant and seed).
Each owns its config schema (``config``). Only ``vamba.cli`` imports this package (docs/design.md).
"""
from __future__ import annotations

from typing import Any

from vamba.recipes.config import AblationTrainConfig, DemoTrainConfig
from vamba.training.cli import Recipe


def _run_demo(cfg: DemoTrainConfig) -> Any:
    from vamba.recipes.demo import run_demo

    return run_demo(cfg)


def _run_ablation(cfg: AblationTrainConfig) -> Any:
    from vamba.recipes.ablation import run_ablation

    return run_ablation(cfg)


# schema name (``override /schema: <name>`` in an experiment) -> the recipe ``vamba train`` runs for it
RECIPES: dict[str, Recipe] = {"demo": Recipe(DemoTrainConfig, _run_demo),
                              "ablation": Recipe(AblationTrainConfig, _run_ablation)}
