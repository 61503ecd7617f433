#!/bin/bash
# One call on the lent H100 (about 10 minutes): the efficiency benchmark at 7B scale (VAMBA vs transformers'
# Qwen2-VL, prefill and training step vs frames, plus the VAMBA stage-1 training step), then the streaming-prefill
# GPU test. Everything worth keeping goes to $OUT (at most 8 files come back):
#   efficiency_$TAG.{json,md}, efficiency_${TAG}_{memory,time}.png, efficiency_stage1_$TAG.json,
#   bench_efficiency.log, gpu_tests.log, nvidia_smi.txt
# TAG (default h100) names the files; MEM_GIB caps the GPU memory (e.g. MEM_GIB=79.2 TAG=h200_cap80: an 80 GB
# H100's room on an H200, so what fits matches the reference measurement's device).
# Run from the project root, with the wheels folder (shared/device-wheels) carried as .whl/:
#   export VAMBA_CODE_COMMIT=<commit>  # recorded in the JSON (the copy on the GPU machine has no .git)
#   bash .whl/install.sh && export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu/efficiency.sh
set -u
# Wheels this script installs (pytest, decord) go to a folder only this user can write: a fixed /tmp path on
# PYTHONPATH would import whatever another local user put there.
SITE=$(mktemp -d)
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/vamba-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/nvidia_smi.txt" 2>&1
python3 -c "import json, vamba.ops; print(json.dumps(vamba.ops.available()))" 2>&1 | tee -a "$OUT/nvidia_smi.txt"

# The sweeps stop themselves inside BUDGET_S (points predicted not to fit are recorded as skipped); the timeout
# is the hard stop. The JSON is rewritten after every point, so a cut-short run keeps what it measured.
# Autotuned kernels (what users run); the Triton autotuning of the first VAMBA calls is part of the budget and is
# recorded per sweep as warmup_s.
TAG=${TAG:-h100}
timeout ${BENCH_TIMEOUT:-440} python3 scripts/bench_efficiency.py out="$OUT" tag="$TAG" \
  budget_s=${BUDGET_S:-380} ${MEM_GIB:+memory_gib=$MEM_GIB} > "$OUT/bench_efficiency.log" 2>&1
echo "bench rc=$?"
if [ ! -f "$OUT/efficiency_$TAG.md" ] && [ -f "$OUT/efficiency_$TAG.json" ]; then
  python3 scripts/bench_efficiency.py report_only="$OUT/efficiency_$TAG.json" >> "$OUT/bench_efficiency.log" 2>&1
fi
grep -vE "INFO|Warning|warn" "$OUT/bench_efficiency.log" | tail -45

# The streaming GPU test with what is left of the 10 minutes (SECONDS counts from this script's start; the
# install before it took about a minute). NOTE: MAMBA_DETERMINISTIC=1 compiles one config per Triton kernel
# instead of autotuning ~10: same math, minutes less compilation for the test's own shapes.
left=$(( ${CALL_LIMIT_S:-520} - SECONDS ))
if [ "$left" -gt 45 ]; then
  python3 -c "import pytest" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --target "$SITE" \
    .whl/pytest-*.whl .whl/pluggy-*.whl .whl/iniconfig-*.whl 2>/dev/null
  MAMBA_DETERMINISTIC=1 timeout $left python3 -m pytest -q -p no:cacheprovider -rfE tests/gpu/test_inference_gpu.py \
    -m gpu > "$OUT/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"
  tail -3 "$OUT/gpu_tests.log"
else
  echo "gpu tests not run: ${left}s left" | tee "$OUT/gpu_tests.log"
fi
