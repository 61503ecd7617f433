"""Imports flow one way: vamba.parallel uses models and ops; models, ops and data never import it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imported(imports: str, prefixes: tuple[str, ...]) -> str:
    code = (f"import sys\n{imports}\n"
            f"print(sorted(m for m in sys.modules if m.startswith({prefixes!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_models_ops_and_data_do_not_import_parallel() -> None:
    assert _imported("import vamba.models, vamba.ops, vamba.data.dataset, vamba.data.collate",
                     ("vamba.parallel",)) == "[]"


def test_parallel_imports_nothing_above_models() -> None:
    # (vamba.data comes in through vamba.models' AutoProcessor registration, the one allowed models -> data import)
    assert _imported("import vamba.parallel, vamba.parallel.memory",
                     ("vamba.training", "vamba.inference", "vamba.evaluation")) == "[]"
