"""Decoding speed against a cached video, old path vs new, beside the memory-bandwidth floor (vamba/bench/answer.py).
Runs from a checkout without installing.

    python scripts/bench_answer.py out=docs/results tag=h200
    python scripts/bench_answer.py device=cpu scale=tiny num_frames=[4,8] answer_tokens=4 out=/tmp/answer
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vamba.bench.answer import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
