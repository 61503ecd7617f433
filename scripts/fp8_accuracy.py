"""What FP8 costs in accuracy: the official fixture's logits and greedy tokens, and a random model's every layer
output, against float32 (vamba/bench/fp8_accuracy.py). Runs from a checkout without installing.

    python scripts/fp8_accuracy.py out=docs/results [size=7b frames=64 device=cuda]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vamba.bench.fp8_accuracy import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
