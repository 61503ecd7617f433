"""Thin call into `vamba.bench.checkpoint` (see its docstring). Runs from a checkout without installing."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vamba.bench.checkpoint import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
