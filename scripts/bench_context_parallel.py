"""Context parallelism on one GPU (vamba/bench/context_parallel.py): the kernels path against the reference, and two
ranks sharing the GPU for per-rank memory and step time at 7B. Runs from a checkout without installing.

    python scripts/bench_context_parallel.py kernels --out OUT/cp_kernels.json
    torchrun --nproc_per_node 2 scripts/bench_context_parallel.py check --out OUT/cp_check.json
    torchrun --nproc_per_node 2 scripts/bench_context_parallel.py measure --mode stage1 --frames 2048 --out OUT/cp.json
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vamba.bench.context_parallel import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
