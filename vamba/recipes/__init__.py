"""Whole pipelines over the layers below: the CPU demo (``demo``: synthetic data -> teacher -> conversion -> two
training stages -> evaluation), the miniature ablations (``ablation``: the demo's recipe per variant and seed) and
the full-scale ablation pipeline (``ablation_pipeline``: ``vamba train`` / ``vamba eval`` commands per arm and seed).
Each owns its config schema (``config``). Only ``vamba.cli`` imports this package (docs/design.md).
"""
from __future__ import annotations

from typing import Any

from vamba.recipes.config import AblationTrainConfig, DemoTrainConfig, PipelineTrainConfig
from vamba.training.cli import Recipe


def _run_demo(cfg: DemoTrainConfig) -> Any:
    from vamba.recipes.demo import run_demo

    return run_demo(cfg)


def _check_demo(cfg: DemoTrainConfig) -> None:
    from vamba.recipes.config import validate_demo
    from vamba.recipes.demo import check_stages

    validate_demo(cfg)
    check_stages(cfg)


def _check_ablation(cfg: AblationTrainConfig) -> None:
    from vamba.recipes.ablation import check_ablation

    check_ablation(cfg)


def _run_ablation(cfg: AblationTrainConfig) -> Any:
    from vamba.recipes.ablation import run_ablation

    return run_ablation(cfg)


def _run_pipeline(cfg: PipelineTrainConfig) -> Any:
    from hydra.core.hydra_config import HydraConfig

    from vamba.recipes.ablation_pipeline import run_pipeline

    # the command line that composed cfg: checked (no stray training key) and repeated by the report step
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return run_pipeline(cfg, overrides)


# schema name (``override /schema: <name>`` in an experiment) -> the recipe ``vamba train`` runs for it
RECIPES: dict[str, Recipe] = {"demo": Recipe(DemoTrainConfig, _run_demo, _check_demo),
                              "ablation": Recipe(AblationTrainConfig, _run_ablation, _check_ablation),
                              "ablation_pipeline": Recipe(PipelineTrainConfig, _run_pipeline)}
