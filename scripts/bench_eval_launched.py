"""`vamba eval` as launched: GPU busy fraction and full-benchmark hours with decode workers (vamba/bench/eval_launched.py).
Runs from a checkout without installing.

    python scripts/bench_eval_launched.py --model /ckpt/Vamba-Qwen2-VL-7B   # -> docs/results/eval_launched_<gpu>.json
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vamba.bench.eval_launched import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
