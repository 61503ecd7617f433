"""VAMBA (each attention backend) vs Qwen2-VL at 2B scale on one CUDA GPU, versus frames (vamba/bench/model.py).
Runs from a checkout without installing.

    python scripts/bench_model.py --out docs/results/model_bench_h100.json [--frames 64 128 256 512]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vamba.bench.model import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
