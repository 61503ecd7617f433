"""Vision tower benchmark: transformers' Qwen2-VL vision forward vs VAMBA's fast forward (vamba/bench/vision.py).
Runs from a checkout without installing.

    python scripts/bench_vision.py --out-dir docs/results --tag h200                     # 1024 + 256 frames, ~3 min
    python scripts/bench_vision.py --device cpu --scale tiny --frame-size 56x84 --frames 2 4 \\
        --modes reference fast --check-frames 2 --out-dir /tmp/vision                     # the logic, in seconds
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vamba.bench.vision import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
