"""The package's import rules (docs/design.md, "Layers") and its module size hint, checked on the source.

Every ``import`` and ``from ... import`` of every module counts, those inside functions too (a lazy import is
still a dependency), and so does every module named in a string for ``importlib`` (the CLI's command table, the
evaluation adapter's default, a module picked by name). A module may import its own layer and the layers its row
allows; nothing else. Only ``vamba.models.zero`` imports DeepSpeed.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vamba"
# Module size: a module past WARN_LINES is reported (a hint to look for a second concept in it); one past MAX_LINES
# fails. Modules are split by concept, never to get under a number (docs/design.md).
WARN_LINES = 500
MAX_LINES = 1000

BELOW_RECIPES = {"utils", "ops", "models", "data", "parallel", "evaluation", "inference", "training"}
# layer -> the other layers it may import. Top-level modules are layers of their own: vamba/__init__.py ("vamba"),
# cli.py (the console entry, the only importer of recipes and bench), doctor.py (`vamba doctor`).
ALLOWED: dict[str, set[str]] = {
    "vamba": set(),
    "utils": set(),
    "ops": {"utils"},
    "models": {"ops", "utils"},
    "data": {"utils"},
    "parallel": {"utils", "ops", "models"},
    "evaluation": {"data", "utils"},
    "inference": {"models", "data", "evaluation", "utils"},
    "training": {"models", "data", "parallel", "utils"},
    "recipes": BELOW_RECIPES,
    "bench": BELOW_RECIPES,
    "doctor": {"ops", "utils"},
    "cli": BELOW_RECIPES | {"recipes", "bench", "doctor"},
}
# Within a layer that may import another, only these of its modules (inference reads evaluation's model interface
# and the benchmark protocols' frame sampler, never the runner or the benchmarks).
ONLY: dict[tuple[str, str], set[str]] = {
    ("inference", "evaluation"): {"vamba.evaluation.interface", "vamba.evaluation.sampling"},
}
# (importing module, imported module) -> why the rule allows it.
EXCEPTIONS = {
    ("vamba.models", "vamba.data.processor"):
        "registration only: `import vamba.models` registers VambaProcessor (which lives with the data pipeline) with "
        "AutoProcessor, so that one import sets up every Auto class",
    ("vamba.evaluation.cli", "vamba.inference.video_qa"):
        "a string only: `vamba eval`'s default model.adapter, imported by name when a checkpoint is evaluated; any "
        "module returning a VideoQAModel can be named instead",
    ("vamba.recipes.ablation_pipeline", "vamba.cli"):
        "a child process, not an import: the pipeline runs `python -m vamba.cli train ...`, the command a user types",
    ("vamba.bench.train_launched", "vamba.cli"):
        "a child process, not an import: the benchmark times `python -m vamba.cli train ...` as a user launches it",
}
# a string naming a module (``vamba.x.y``) or a function (``vamba.x.y:f``), and the fixed start of an f-string
# naming a module of a package (``f"vamba.x.{name}"``)
NAMED = re.compile(r"vamba(\.\w+)+(:\w+)?")
NAMED_PREFIX = re.compile(r"vamba(\.\w+)+\.")
# the third-party package that one module alone may import
SOLE_IMPORTER = {"deepspeed": "vamba.models.zero"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return "vamba" if len(parts) == 1 else parts[1]


def _all_imports(module: str, path: Path) -> set[str]:
    """Every name ``module`` imports (``from x import y``: ``x`` and ``x.y``), wherever the statement sits, and
    every vamba module it names in a string (``NAMED``, ``NAMED_PREFIX``): what ``importlib`` will import."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                package = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(package + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and NAMED.fullmatch(node.value):
            found.add(node.value.split(":")[0])
        elif (isinstance(node, ast.JoinedStr) and node.values and isinstance(first := node.values[0], ast.Constant)
              and NAMED_PREFIX.fullmatch(first.value)):
            found.add(first.value[:-1])
    return found


def _imports(module: str, path: Path) -> set[str]:
    """Every vamba module ``module`` imports or names for ``importlib`` (``from vamba.x import y``: ``vamba.x``, or
    ``vamba.x.y`` when y is a module)."""
    modules = _modules()
    return {name for name in _all_imports(module, path) if name in modules and name != module}


def test_every_module_belongs_to_a_layer_of_the_table() -> None:
    layers = {_layer(m) for m in _modules()}
    assert layers <= set(ALLOWED), f"add a row for {sorted(layers - set(ALLOWED))} (and to docs/design.md)"


def test_imports_follow_the_layers() -> None:
    bad = []
    for module, path in _modules().items():
        layer = _layer(module)
        for target in sorted(_imports(module, path)):
            other = _layer(target)
            if other == layer or (module, target) in EXCEPTIONS:
                continue
            only = ONLY.get((layer, other))
            if other not in ALLOWED[layer] or (only is not None and target not in only):
                bad.append(f"{module} imports {target} ({layer} -> {other})")
    assert not bad, "\n".join(bad)


def test_module_strings_are_read() -> None:
    """The strings count: the CLI's command table names every command's module, evaluation's default adapter is
    seen as the crossing into inference that EXCEPTIONS lists, and a module picked from a package by name (an
    f-string) counts as that package."""
    modules = _modules()
    commands = {"vamba.training.cli", "vamba.bench.efficiency", "vamba.doctor"}
    assert commands <= _imports("vamba.cli", modules["vamba.cli"])
    assert "vamba.inference.video_qa" in _imports("vamba.evaluation.cli", modules["vamba.evaluation.cli"])
    package = "vamba.evaluation.benchmarks"
    assert package in _all_imports(package, modules[package])


def test_one_module_imports_deepspeed() -> None:
    """DeepSpeed is touched in one place (docs/design.md): every other module asks ``vamba.models.zero``."""
    for package, sole in SOLE_IMPORTER.items():
        importers = {module for module, path in _modules().items()
                     if any(name == package or name.startswith(package + ".") for name in _all_imports(module, path))}
        assert importers == {sole}, (package, sorted(importers))


def test_the_exceptions_are_still_needed() -> None:
    """An exception the code no longer needs is removed from the table (and from docs/design.md)."""
    modules = _modules()
    for module, target in EXCEPTIONS:
        assert target in _imports(module, modules[module]), (module, target)


def test_lower_layers_load_nothing_above_them() -> None:
    """At run time too: importing every module of a lower layer in a fresh interpreter loads no vamba module of a
    layer above it (models and parallel load data only through the models' processor registration; nothing below
    training loads parallel, training, inference or evaluation)."""
    runtime = {"utils": set(), "ops": {"utils"}, "data": {"utils"}, "models": {"ops", "utils", "data"},
               "parallel": {"utils", "ops", "models", "data"}}
    for layer, allowed in runtime.items():
        names = [m for m in _modules() if _layer(m) == layer]
        code = ("import sys\n" + "".join(f"import {m}\n" for m in names)
                + "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('vamba.')}))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
        assert out.returncode == 0, out.stderr
        assert set(eval(out.stdout)) <= {layer} | allowed, (layer, out.stdout)


def test_no_module_is_longer_than_the_limit() -> None:
    """One module per concept. Past WARN_LINES a warning names the module (look for a second concept in it and
    split it by concept, if there is one); past MAX_LINES it fails."""
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for p in [*PACKAGE.rglob("*.py"), *(ROOT / "scripts").rglob("*.py")]}
    for name, n in sorted(sizes.items()):
        if WARN_LINES < n <= MAX_LINES:
            warnings.warn(f"{name} has {n} lines: does it hold more than one concept?", stacklevel=1)
    long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not long, long
