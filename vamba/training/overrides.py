"""``vamba train`` / ``vamba distill-cache`` arguments before Hydra sees them: ``--help`` from the schemas, and a typo
reported as ``unknown key optim.lrr; did you mean optim.lr?`` (docs/cli.md).

Hydra's own advice for a key the config lacks ("To append to your config use +optim.lrr=1") is wrong for us: every
config is a typed schema, so a new key is always a typo. The keys given are checked against the config composed
from the group choices of the same command line (``experiment=demo`` brings the ``demo.*`` keys), and Hydra then
composes the full command line as before.
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vamba.utils.cli_args import ArgsError, help_text, key_rows, keys, suggest

# Earlier spellings of training keys -> the key now (one name per concept, docs/design.md "Command line").
DEPRECATED = {"demo.frames": "demo.num_frames"}


def groups(config_dir: Path) -> dict[str, list[str]]:
    """Config group -> its options (the YAML files of ``configs/<group>/``)."""
    return {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(config_dir.iterdir()) if d.is_dir()}


def train_help(prog: str, doc: str, config_dir: Path, schemas: Mapping[str, type]) -> str:
    """The ``--help`` page: the groups with their options, every key of ``TrainConfig`` with its type, default
    (the schema's; ``configs/train.yaml`` and the groups may set another) and meaning, and the recipes' own keys."""
    from vamba.training.config import TrainConfig

    doc += ("\n\nThe defaults below are the schema's: configs/train.yaml and the groups it selects set others "
            "(--cfg job prints the composed values).")
    lines = [help_text(TrainConfig, f"vamba {prog}", doc), "",
             "config groups (group=option; later ones override earlier ones, key=value overrides all):"]
    lines += [f"  {name:<11} {' | '.join(options)}" for name, options in groups(config_dir).items()]
    shown = {k.name for k in keys(TrainConfig)}
    for name, schema in schemas.items():
        extra = [k for k in keys(schema) if k.name not in shown]
        shown |= {k.name for k in extra}
        experiments = [p.stem for p in sorted((config_dir / "experiment").glob("*.yaml"))
                       if f"/schema: {name}" in p.read_text()]
        if extra:
            lines += ["", f"keys of the {name} recipe (with experiment={' | '.join(experiments) or '...'}; "
                          "the keys above also apply):"]
            lines += key_rows(extra)
    lines += ["", "Hydra's own options: --cfg job (print the composed config), -m (a sweep), --hydra-help"]
    return "\n".join(lines)


def _typed_keys(node: Any, prefix: str = "") -> list[str]:
    """Every settable key of a composed config (inside free-form dicts, such as ``deepspeed``, none is listed)."""
    from omegaconf import DictConfig, OmegaConf

    found = []
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(child)):
            found += _typed_keys(child, f"{prefix}{key}.")
        else:
            found.append(f"{prefix}{key}")
    return found


def _has_key(cfg: Any, key: str) -> bool:
    from omegaconf import DictConfig, OmegaConf

    node = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig):
            return True  # inside a list or past a leaf: Hydra's own check reports it
        if not dataclasses.is_dataclass(OmegaConf.get_type(node)):
            return True  # a free-form dict (deepspeed, ablation.variants) takes any key
        if part not in node.keys():  # `in node` is False for a key whose value is ??? (required, not yet set)
            return False
        node = node._get_node(part)
    return True


def check(argv: Sequence[str], prog: str, config_dir: Path, schemas: Mapping[str, type]) -> list[str]:
    """``argv`` with deprecated keys renamed (a line on stderr for each); raises ``ArgsError`` for a key that is
    not in the config those arguments compose. Anything this check cannot compose (a sweep over groups, a bad
    option) is left to Hydra, which reports it."""
    from hydra import compose, initialize_config_dir

    from vamba.training.config import register

    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and key.lstrip("+") in DEPRECATED:
            new = key[: len(key) - len(key.lstrip("+"))] + DEPRECATED[key.lstrip("+")]
            print(f"vamba {prog}: {arg} is deprecated; write {new}={value}", file=sys.stderr)
            arg = f"{new}={value}"
        out.append(arg)
    names = set(groups(config_dir)) | {"schema"}
    pairs = [a.partition("=") for a in out if "=" in a and not a.startswith("-")]
    chosen = [f"{k}={v}" for k, _, v in pairs if k in names]
    # +key= adds a key in Hydra; with typed schemas that is a typo too (free-form dicts such as deepspeed still
    # take it). ~key= deletes one: left to Hydra.
    plain = [k.lstrip("+") for k, _, _ in pairs if k.lstrip("+") not in names and not k.startswith("~")
             and not k.lstrip("+").startswith("hydra.")]
    if not plain:
        return out
    register(schemas)
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name="train", overrides=chosen)
    except Exception:  # noqa: BLE001 - a group sweep or a bad option: Hydra's composition reports it
        return out
    for key in plain:
        if not _has_key(cfg, key):
            raise ArgsError(f"{suggest(key, _typed_keys(cfg))} (every config is a typed schema: a key that is "
                            "not in it is a typo, and +key= cannot add one either; --help lists the keys)")
    return out
