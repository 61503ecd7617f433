#!/bin/bash
# Every GPU correctness test (tests/gpu/, marked gpu; skipped without CUDA, multi-GPU ones with fewer GPUs).
# Arguments go to pytest, e.g. `bash scripts/gpu/tests.sh tests/gpu/test_context_parallel_gpu.py -k combine`.
exec python3 -m pytest -q -m gpu -rs "${@:-tests/gpu}"
