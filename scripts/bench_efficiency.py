"""Efficiency benchmark, VAMBA vs the Qwen2-VL transformer: memory and time vs frames (vamba/bench/efficiency.py;
also ``vamba bench``). Runs from a checkout without installing.

    python scripts/bench_efficiency.py out=docs/results tag=h100
    python scripts/bench_efficiency.py device=cpu scale=tiny num_frames=[4,8] out=/tmp/bench
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vamba.bench.efficiency import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
