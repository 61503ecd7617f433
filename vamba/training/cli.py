"""``vamba train`` (the Hydra entry point) and ``vamba distill-cache``.

    vamba train experiment=demo                                  # end-to-end CPU demo
    vamba train experiment=mini_ablations                        # the paper's ablations in miniature (CPU)
    vamba train model.path=/ckpt/Qwen2-VL-7B-Instruct data.mixture=/data/pt.yaml stage=pretrain \\
        stage.distill.weight=1 stage.distill.teacher=/ckpt/Qwen2-VL-7B-Instruct deepspeed=zero3
    torchrun --nproc_per_node 8 -m vamba.cli train experiment=paper_pretrain model.path=... data.mixture=...
    vamba train -m optim.lr=1e-5,2e-5 model.path=... data.mixture=...   # a sweep, one process (not under torchrun)
    vamba train experiment=ablation_distill ablation.launcher=slurm ablation.model=... ...  # docs/ablations.md
    vamba distill-cache experiment=paper_pretrain model.path=/ckpt/Qwen2-VL-7B-Instruct data.mixture=/data/pt.yaml \\
        stage.distill.cache_dir=cache/pt
    vamba train experiment=paper_pretrain model.path=/ckpt/Qwen2-VL-7B-Instruct data.mixture=/data/pt.yaml \\
        stage.distill.source=cache stage.distill.cache_dir=cache/pt

``vamba distill-cache`` takes the keys of the training run it serves (the same experiment, data and stage keys:
its teacher is ``stage.distill.teacher``, which ``experiment=paper_pretrain`` sets to ``model.path``) and writes
the cache into ``stage.distill.cache_dir`` with Hydra's record (``.hydra/``) inside it; training refuses a cache
whose recorded settings differ from its own (vamba.training.cache_settings).

Configs live in ``configs/`` (train.yaml and its groups); ``--cfg job`` prints the composed config,
``--help`` lists the groups and every key (``vamba.training.overrides``, from the schemas). A recipe (the demo, the
ablations) is given to ``main`` by ``vamba.cli``: its schema is registered beside ``TrainConfig`` and, when an
experiment selects it, ``vamba train`` runs the recipe instead of one stage.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclass(frozen=True)
class Recipe:
    """A whole pipeline that ``vamba train`` runs instead of one stage: its schema (a ``TrainConfig`` subclass with
    the recipe's own section), the function that runs a config of that schema, and the one that checks it (raises
    ``ConfigError``) before anything is written."""

    schema: type
    run: Callable[[Any], Any]
    check: Callable[[Any], None] | None = None


def _hydra_main(task_function, argv: list[str], prog: str, recipes: Mapping[str, Recipe] | None = None) -> int:
    """Run ``task_function(cfg)`` under ``@hydra.main`` with ``argv`` as its command line."""
    import hydra

    from vamba.training.config import register

    if not (CONFIG_DIR / "train.yaml").exists():
        print(f"vamba {prog}: no configs at {CONFIG_DIR}; install the package from its repository (pip install -e .)",
              file=sys.stderr)
        return 2
    from vamba.training.overrides import check, train_help
    from vamba.utils.cli_args import ArgsError, wants_help

    schemas = {name: recipe.schema for name, recipe in (recipes or {}).items()}
    if wants_help(argv):  # ours, from the schemas; Hydra's page (--hydra-help) describes no key of ours
        print(train_help(prog, __doc__ or "", CONFIG_DIR, schemas))
        return 0
    exclusive = _exclusive_modes(argv)
    if len(exclusive) > 1:
        # Hydra refuses these together with a bare ValueError traceback ("Only one of --run, --multirun, --cfg ...")
        print(f"vamba {prog}: {' and '.join(exclusive)} cannot be combined: --cfg / --info describe the one config a "
              "command composes, and a sweep (-m) composes one per job. Print a job's config by giving its values "
              f"without -m (e.g. `vamba {prog} experiment=X key=value --cfg job`).", file=sys.stderr)
        return 2
    argv = _overrides_first(argv)
    try:
        argv = check(argv, prog, CONFIG_DIR, schemas)
    except ArgsError as e:
        print(f"vamba {prog}: {e}", file=sys.stderr)
        return 2
    register(schemas)
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("vamba_sweep_job"):  # hydra.sweep.subdir (configs/train.yaml)
        OmegaConf.register_new_resolver("vamba_sweep_job", sweep_job_name)
    problem = composition_error(argv)
    if problem:
        print(f"vamba {prog}: {problem}", file=sys.stderr)
        return 2
    saved = sys.argv
    sys.argv = [f"vamba {prog}", *argv]
    try:
        hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")(task_function)()
    finally:
        sys.argv = saved
    return 0


def composition_error(argv: list[str]) -> str | None:
    """Why the command's overrides do not compose (a wrong type such as ``optim.lr=fast``, an unknown group option
    such as ``deepspeed=zero4``, a ``+deepspeed.x`` under ``deepspeed=none``), in one line; None when they do or
    when the command is a sweep (``-m``: its values compose per job). Composed here first because Hydra prints such
    errors over several lines and exits with 1, or raises an assertion."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if any(a in ("-m", "--multirun") for a in argv):
        return None
    overrides = [a for a in argv if not a.startswith("-") and "=" in a]
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
            compose("train", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        text = str(e) + ("\n" + str(e.__cause__) if e.__cause__ else "")  # the cause says why (a type)
        noise = ("full_key", "reference_type", "object_type", "Config search path", "provider=")
        return " ".join(line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(noise))
    except AssertionError as e:  # Hydra's own assertion, e.g. a key added under a group that is null
        return f"the overrides {overrides} do not compose ({e}): is a key added under a group set to none?"
    return None


# Hydra's flags that take a value (``--cfg job``); ``--info`` may or may not.
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
                "-cd", "--info", "-i", "--experimental-rerun"}


def _overrides_first(argv: list[str]) -> list[str]:
    """``key=value`` overrides before Hydra's flags: its parser takes the overrides as one positional list, so
    ``experiment=X --cfg job key=value`` failed with "unrecognized arguments: key=value"."""
    overrides, flags, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            flags.append(arg)
            value = argv[i + 1] if i + 1 < len(argv) else None
            if arg in _VALUE_FLAGS and value is not None and "=" not in value and not value.startswith("-"):
                flags.append(value)
                i += 1
        else:
            overrides.append(arg)
        i += 1
    return overrides + flags


def swept_keys(argv: list[str]) -> list[str]:
    """The keys a command line sweeps (Hydra's ``key=a,b`` or ``key=range(...)`` / ``choice(...)`` /
    ``interval(...)`` / ``glob(...)``); a list value ``key=[a,b]`` is one value, not a sweep."""
    keys = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key.startswith("-"):
            continue
        depth, top_level_comma = 0, False
        for ch in value:
            depth += ch in "[({"
            depth -= ch in "])}"
            top_level_comma |= ch == "," and depth == 0
        if top_level_comma or value.startswith(("range(", "choice(", "interval(", "glob(")):
            keys.append(key.lstrip("+~"))
    return keys


def sweep_job_name(num: int, overrides: list[str]) -> str:
    """A sweep job's folder: its number and the values it sweeps (``0_optim.lr=1e-05``); the other overrides are
    the same in every job (the job's ``.hydra/`` records them all). ``/`` becomes ``_`` (a path swept stays one
    folder), and the name is cut to 120 characters (the number keeps it unique)."""
    swept = set(swept_keys(sys.argv[1:]))  # the command line (_hydra_main sets sys.argv for hydra.main)
    values = [o for o in overrides if o.partition("=")[0].lstrip("+~") in swept]
    name = ",".join(values).replace("/", "_")[:120]
    return f"{num}_{name}" if name else str(num)


def _exclusive_modes(argv: list[str]) -> list[str]:
    """Hydra's mutually exclusive modes on a command line, as the user spelt them (-m, --cfg, --info, ...)."""
    modes = {"-m": "-m", "--multirun": "-m", "-c": "--cfg", "--cfg": "--cfg", "-i": "--info", "--info": "--info",
             "--shell-completion": "--shell-completion", "-sc": "--shell-completion"}
    found = {modes[a.split("=", 1)[0]] for a in argv if a.split("=", 1)[0] in modes}
    return sorted(found)


def to_config(cfg):
    """DictConfig -> TrainConfig (typed), with each multirun job in its own directory."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from vamba.training.config import from_dictconfig

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        hydra_cfg = HydraConfig.get()
        job = Path(hydra_cfg.runtime.output_dir)
        given = next((o.split("=", 1)[1] for o in hydra_cfg.overrides.task
                      if o.split("=", 1)[0].lstrip("+") == "output_dir"), None)
        if given:  # the jobs go into the output_dir the command gave, not into Hydra's sweep folder, which Hydra
            # made with its record of the sweep (multirun.yaml): the record moves along, the folder goes
            _remove_if_empty(job)
            record = job.parent / "multirun.yaml"
            if record.is_file():
                Path(given).mkdir(parents=True, exist_ok=True)
                record.replace(Path(given) / record.name)
            _remove_if_empty(job.parent)
            job = Path(given) / job.name
        cfg.output_dir = str(job)
        # Hydra's own launch lines are off (its logging would replace ours): say which job this is and where it goes
        print(f"sweep job {hydra_cfg.job.num}: {' '.join(hydra_cfg.overrides.task)} -> {cfg.output_dir}",
              file=sys.stderr)
    return from_dictconfig(cfg)


def save_hydra_record(cfg, output_dir: Path) -> None:
    """Hydra's own record (``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``), written by us once the config
    is valid: ``configs/train.yaml`` sets ``hydra.output_subdir: null`` and ``hydra.run.dir: .``, because Hydra
    creates its run directory and writes this record before the task starts, so a config that then failed
    validation left a new ``runs/train/<date>/`` holding only ``.hydra/``."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from vamba.utils.io import atomic_write_text

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    record = output_dir / ".hydra"
    record.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(record / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})))
    atomic_write_text(record / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.overrides.task))


def _remove_if_empty(directory: Path) -> None:
    """A multirun job's directory, which Hydra creates before the task runs, when the job failed validation."""
    try:
        directory.rmdir()  # only succeeds on an empty directory
    except OSError:
        pass


def _train_task(cfg, recipes: Mapping[str, Recipe]) -> None:
    from vamba.training.config import ConfigError

    config = None
    made = False  # whether this command makes the run directory (a config error then removes it: rundir.abandon)
    try:
        config = to_config(cfg)
        recipe = next((r for r in recipes.values() if type(config) is r.schema), None)
        if recipe is not None:
            if recipe.check is not None:
                recipe.check(config)  # before any directory is made (the recipe checks again: it is also called directly)
            save_hydra_record(cfg, Path(config.output_dir))
            recipe.run(config)
        else:
            from vamba.training.run import check_before_run, train

            check_before_run(config)  # before any directory is made (train checks again: it is also called directly)
            made = not Path(config.output_dir).exists()
            save_hydra_record(cfg, Path(config.output_dir))
            train(config)
    except ConfigError as e:
        print(f"vamba train: {e}", file=sys.stderr)
        if config is not None:
            from vamba.training import rundir

            if made and rundir.abandon(config.output_dir):
                print(f"vamba train: {config.output_dir} removed: this command made it and trained nothing",
                      file=sys.stderr)
            _remove_if_empty(Path(config.output_dir))
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
    # Long videos make the activations of every step a different size: without expandable segments the CUDA caching
    # allocator fragments until a step fails for memory that is free in pieces (the benchmarks run with it too,
    # docs/bench.md). Read at the first CUDA allocation, so setting it here is early enough; a user's value wins.
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

    def train_task(cfg) -> None:
        _train_task(cfg, recipes)

    return _hydra_main(train_task, argv, "train", recipes)


def _distill_cache_task(cfg) -> None:
    from vamba.training.config import ConfigError
    from vamba.training.distill_cache import write_cache

    try:
        config = to_config(cfg)
        n = write_cache(config)
        save_hydra_record(cfg, Path(config.stage.distill.cache_dir))  # the command that wrote the cache
    except ConfigError as e:
        print(f"vamba distill-cache: {e}", file=sys.stderr)
        _failed(2)
        raise SystemExit(2) from None
    except BaseException as e:
        _failed(1, e)
        raise
    _close_process_group()
    print(f"vamba distill-cache: {n} samples cached in {Path(config.stage.distill.cache_dir).resolve()}")


def distill_cache_main(argv: list[str]) -> int:
    """``vamba distill-cache``: writes into ``stage.distill.cache_dir`` with Hydra's record (``.hydra/``) inside it,
    not into a training run directory that would hold nothing else."""
    return _hydra_main(_distill_cache_task, argv, "distill-cache")
