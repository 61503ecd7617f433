"""decord against SkippingReader on the evaluation's reads: seconds and frame equality (vamba/bench/readers.py).
Runs from a checkout without installing.

    python scripts/bench_readers.py /data/lvbench/*.mp4 --tag cpu   # -> docs/results/readers_cpu.json
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vamba.bench.readers import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
