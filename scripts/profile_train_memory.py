"""Where a VAMBA training step's GPU memory goes (vamba/bench/memory_profile.py): the allocator's trace of one
forward+backward per frame count and mode, the live blocks at the peak grouped by allocating code. Needs a CUDA GPU.
Runs from a checkout without installing.

    python scripts/profile_train_memory.py --frames 64 256 --out-dir docs/results --tag h200
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vamba.bench.memory_profile import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
