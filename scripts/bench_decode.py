"""Decode throughput of decord and PyAV on a long 640x360 H.264 video (vamba/bench/decode.py). Runs from a checkout
without installing.

    python scripts/bench_decode.py --workers 2   # -> docs/results/decode_throughput.json
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vamba.bench.decode import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
