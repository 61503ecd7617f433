from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_data_imports_neither_models_nor_ops() -> None:
    modules = [p.stem for p in (ROOT / "vamba" / "data").glob("*.py") if p.stem != "__init__"]
    code = ("import sys\n" + "".join(f"import vamba.data.{m}\n" for m in modules) +
            "bad = [m for m in sys.modules if m.startswith(('vamba.models', 'vamba.ops'))]\n"
            "assert not bad, bad\nprint(len([m for m in sys.modules if m.startswith('vamba.data.')]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(modules)
