"""Context parallelism on one GPU (vamba/bench/context_parallel.py): two ranks sharing the GPU, per-rank memory and
step time at 7B. Runs from a checkout without installing. (The correctness checks: tests/gpu/, scripts/gpu/tests.sh.)

    torchrun --nproc_per_node 2 scripts/bench_context_parallel.py measure --mode stage1 --frames 2048 --out OUT/cp.json
    python scripts/bench_context_parallel.py merge --out OUT/context_parallel.json OUT/cp_*.json
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vamba.bench.context_parallel import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
