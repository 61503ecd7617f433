"""Thin call into `vamba.bench.data_pipeline` (see its docstring). Runs from a checkout without installing.

    python scripts/bench_data.py out=docs/results videos=[/data/v640_120s.mp4] frames=[512,1024] workers=[0,1,2]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vamba.bench.data_pipeline import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
