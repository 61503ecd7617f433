"""``vamba train`` (the Hydra entry point) and ``vamba distill-cache``.

    vamba train experiment=demo                                  # end-to-end CPU demo
    vamba train experiment=mini_ablations                        # the paper's ablations in miniature (CPU)
    vamba train model.path=/ckpt/Qwen2-VL-7B-Instruct data.mixture=/data/pt.yaml stage=pretrain \\
        stage.distill.weight=1 stage.distill.teacher=/ckpt/Qwen2-VL-7B-Instruct deepspeed=zero3
    torchrun --nproc_per_node 8 -m vamba.cli train experiment=paper_pretrain model.path=... data.mixture=...
    vamba train -m experiment=ablation_distill model.path=... data.mixture=...   # a sweep
    vamba distill-cache model.path=/ckpt/Qwen2-VL-7B-Instruct data.mixture=/data/pt.yaml output_dir=cache/pt

Configs live in ``configs/`` (train.yaml and its groups); ``--cfg job`` prints the composed config,
``--help`` lists the groups. A recipe (the demo, the ablations) is given to ``main`` by ``vamba.cli``: its schema
is registered beside ``TrainConfig`` and, when an experiment selects it, ``vamba train`` runs the recipe instead of
one stage.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclass(frozen=True)
class Recipe:
    """A whole pipeline that ``vamba train`` runs instead of one stage: its schema (a ``TrainConfig`` subclass with
    the recipe's own section) and the function that runs a config of that schema."""

    schema: type
    run: Callable[[Any], Any]


def _hydra_main(task_function, argv: list[str], prog: str, recipes: Mapping[str, Recipe] | None = None) -> int:
    """Run ``task_function(cfg)`` under ``@hydra.main`` with ``argv`` as its command line."""
    import hydra

    from vamba.training.config import register

    if not (CONFIG_DIR / "train.yaml").exists():
        print(f"vamba {prog}: no configs at {CONFIG_DIR}; install the package from its repository (pip install -e .)",
              file=sys.stderr)
        return 2
    register({name: recipe.schema for name, recipe in (recipes or {}).items()})
    saved = sys.argv
    sys.argv = [f"vamba {prog}", *argv]
    try:
        hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")(task_function)()
    finally:
        sys.argv = saved
    return 0


def to_config(cfg):
    """DictConfig -> TrainConfig (typed), with each multirun job in its own directory."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from vamba.training.config import from_dictconfig

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        cfg.output_dir = HydraConfig.get().runtime.output_dir
    return from_dictconfig(cfg)


def _train_task(cfg, recipes: Mapping[str, Recipe]) -> None:
    from vamba.training.config import ConfigError

    try:
        config = to_config(cfg)
        recipe = next((r for r in recipes.values() if type(config) is r.schema), None)
        if recipe is not None:
            recipe.run(config)
        else:
            from vamba.training.run import train

            train(config)
    except ConfigError as e:
        print(f"vamba train: {e}", file=sys.stderr)
        _failed(2)
        raise SystemExit(2) from None
    except BaseException as e:
        _failed(1, e)
        raise
    _close_process_group()


def _failed(code: int, error: BaseException | None = None) -> None:
    """After an error on this rank of a multi-rank run: exit now, without the closing collective (where the rank
    waited for the others until the group's timeout: vamba.utils.distributed.exit_failed). One process: returns,
    and the error propagates as before."""
    from vamba.utils.distributed import exit_failed, is_distributed

    if is_distributed():
        exit_failed(code, error)


def _close_process_group() -> None:
    from vamba.utils.distributed import close_process_group

    close_process_group()


def main(argv: list[str], recipes: Mapping[str, Recipe] | None = None) -> int:
    """``vamba train``: one stage, or the recipe (``recipes``: schema name -> Recipe) whose schema the config has."""
    recipes = dict(recipes or {})

    def train_task(cfg) -> None:
        _train_task(cfg, recipes)

    return _hydra_main(train_task, argv, "train", recipes)


def _distill_cache_task(cfg) -> None:
    from vamba.training.distill_cache import write_cache

    from vamba.training.config import ConfigError

    try:
        config = to_config(cfg)
        n = write_cache(config)
    except ConfigError as e:
        print(f"vamba distill-cache: {e}", file=sys.stderr)
        _failed(2)
        raise SystemExit(2) from None
    except BaseException as e:
        _failed(1, e)
        raise
    _close_process_group()
    print(f"vamba distill-cache: {n} samples cached in {config.output_dir}")


def distill_cache_main(argv: list[str]) -> int:
    return _hydra_main(_distill_cache_task, argv, "distill-cache")
