"""``vamba train`` (the Hydra entry point) and ``vamba distill-cache``.

    vamba train experiment=demo                                  # end-to-end CPU demo
    vamba train experiment=mini_ablations                        # the paper's ablations in miniature (CPU)
    vamba train model.path=/ckpt/Qwen2-VL-7B-Instruct data.mixture=/data/pt.yaml stage=pretrain \\
        stage.distill.weight=1 stage.distill.teacher=/ckpt/Qwen2-VL-7B-Instruct deepspeed=zero3
    torchrun --nproc_per_node 8 -m vamba.cli train experiment=paper_pretrain model.path=... data.mixture=...
    vamba train -m experiment=ablation_distill model.path=... data.mixture=...   # a sweep
    vamba distill-cache model.path=/ckpt/Qwen2-VL-7B-Instruct data.mixture=/data/pt.yaml output_dir=cache/pt

Configs live in ``configs/`` (train.yaml and its groups); ``--cfg job`` prints the composed config,
``--help`` lists the groups.
"""
from __future__ import annotations

import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _hydra_main(task_function, argv: list[str], prog: str) -> int:
    """Run ``task_function(cfg)`` under ``@hydra.main`` with ``argv`` as its command line."""
    import hydra

    from vamba.training.config import register

    if not (CONFIG_DIR / "train.yaml").exists():
        print(f"vamba {prog}: no configs at {CONFIG_DIR}; install the package from its repository (pip install -e .)",
              file=sys.stderr)
        return 2
    register()
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


def _train_task(cfg) -> None:
    from vamba.training.config import ConfigError

    try:
        config = to_config(cfg)
        if config.task == "demo":
            from vamba.recipes.demo import run_demo

            run_demo(config)
        elif config.task == "ablate":
            from vamba.recipes.ablation import run_ablation

            run_ablation(config)
        else:
            from vamba.training.run import train

            train(config)
    except ConfigError as e:
        print(f"vamba train: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        _close_process_group()


def _close_process_group() -> None:
    from vamba.utils.distributed import close_process_group

    close_process_group()


def main(argv: list[str]) -> int:
    return _hydra_main(_train_task, argv, "train")


def _distill_cache_task(cfg) -> None:
    from vamba.training.distill_cache import write_cache

    from vamba.training.config import ConfigError

    try:
        config = to_config(cfg)
        n = write_cache(config)
    except ConfigError as e:
        print(f"vamba distill-cache: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        _close_process_group()
    print(f"vamba distill-cache: {n} samples cached in {config.output_dir}")


def distill_cache_main(argv: list[str]) -> int:
    return _hydra_main(_distill_cache_task, argv, "distill-cache")
