"""The ``vamba`` command: one line per subcommand, each implemented in the module it names.

Usage: ``vamba <command> [key=value ...]``; ``vamba <command> --help`` lists the command's keys. Every command takes
``key=value`` arguments: train and distill-cache through Hydra, the others through ``vamba.utils.cli_args`` (one
grammar, docs/cli.md). This is the only module that imports ``vamba.recipes`` and ``vamba.bench`` (docs/design.md).
"""
from __future__ import annotations

import importlib
import sys

from vamba.utils.cli_args import ArgsError, print_error

# command -> ("module:function", one-line help). Functions take the remaining argv (list[str]) and
# return an exit code. Imports are lazy so ``vamba --help`` is instant and a missing optional
# dependency only affects the command that needs it.
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("vamba.doctor:main", "versions, devices and which kernel backends are available"),
    "data": ("vamba.data.cli:main", "data tools: synth (write the synthetic data set), stats (check a mixture)"),
    "eval": ("vamba.evaluation.cli:main", "evaluate a model on a video benchmark, or re-score recorded replies"),
    "compare": ("vamba.evaluation.compare:main",
                "is model A better than B? paired difference of `vamba eval` runs, 95% interval, McNemar"),
    "chat": ("vamba.inference.cli:main", "ask a model about a video (streaming prefill; interactive follow-ups)"),
    "bench": ("vamba.bench.efficiency:main", "efficiency benchmark: VAMBA vs Qwen2-VL, memory and time vs frames"),
    "train": ("vamba.cli:train",
              "train a stage (Hydra: key=value overrides, -m sweeps); experiment=demo runs the CPU demo"),
    "convert": ("vamba.inference.convert:main", "released VAMBA / Qwen2-VL checkpoint -> vamba-typed one + processor"),
    "distill-cache": ("vamba.training.cli:distill_cache_main", "write the teacher's top-k logits for distillation without it"),
}


def train(argv: list[str]) -> int:
    """``vamba train``: the training entry (``vamba.training.cli``) with the recipes it can run (``vamba.recipes``)."""
    from vamba.recipes import RECIPES
    from vamba.training.cli import main as train_main

    return train_main(argv, RECIPES)


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: vamba <command> [key=value ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "vamba <command> --help lists the command's keys with their types, defaults and meaning;",
              "start with: vamba doctor"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"vamba: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func = COMMANDS[name][0].split(":")
    try:
        code = int(getattr(importlib.import_module(module), func)(rest) or 0)
        # a multi-rank run that closed its process group ends here, without the interpreter's finalisation (an
        # abort at exit: vamba.utils.distributed.end_process); every other command returns its code
        distributed = sys.modules.get("vamba.utils.distributed")
        return distributed.end_process(code) if distributed is not None else code
    except ArgsError as e:  # an argument that does not fit the command's keys: one line, not a traceback
        return print_error(f"vamba {name}", e)
    except SystemExit as e:
        if e.code in (0, None):  # --help exits 0 the way argparse does; in-process callers get the code back
            return 0
        raise


if __name__ == "__main__":
    sys.exit(main())
