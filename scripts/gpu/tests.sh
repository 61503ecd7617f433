#!/bin/bash
# Every GPU correctness test: `pytest -m gpu tests/gpu` (skipped without CUDA; multi-GPU ones with fewer GPUs).
# Arguments replace the path, e.g. `bash scripts/gpu/tests.sh tests/gpu/test_context_parallel_gpu.py -k combine -s`.
# On the lent machine, from the project root with the wheels folder at .whl/:
#   bash .whl/install.sh && export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu/tests.sh
set -u
SITE=$(mktemp -d)  # pytest from the carried wheels when the image lacks it, in a folder only this user can write
python3 -c "import pytest" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --target "$SITE" \
  .whl/pytest-*.whl .whl/pluggy-*.whl .whl/iniconfig-*.whl
# MAMBA_DETERMINISTIC=1: one Triton config per mamba-ssm kernel instead of autotuning each test's shapes
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" MAMBA_DETERMINISTIC=${MAMBA_DETERMINISTIC:-1}
exec python3 -m pytest -q -p no:cacheprovider -m gpu -rs "${@:-tests/gpu}"
