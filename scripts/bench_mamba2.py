"""The SSD scan and the whole Mamba-2 block at VAMBA-7B sizes on one CUDA GPU (vamba/bench/mamba2.py). Runs from a
checkout without installing.

    python scripts/bench_mamba2.py --out docs/results/mamba2_bench.json [--tokens 38250 153000 612000] [--what scan block]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vamba.bench.mamba2 import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
