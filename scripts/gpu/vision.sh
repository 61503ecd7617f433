#!/bin/bash
# One call on the lent H200 for the vision tower (about 5 minutes; needs only torch + transformers, no
# kernel wheels): scripts/bench_vision.py at 7B (transformers' forward, the fast forward, the fast forward
# compiled; 1024 then 256 frames at 640x360; accuracy budget; profiler tables), then the tower's GPU tests.
# Everything worth keeping goes to $OUT:
#   vision_$TAG.json, vision_profile_${TAG}_{reference,fast,compiled}.txt, bench_vision.log, gpu_vision_tests.log,
#   nvidia_smi.txt
# TAG (default h200) names the files; FRAMES (e.g. "1024 256 3600") and BUDGET_S (default 170) change the sweep;
# BENCH_ARGS adds options (e.g. "--device cpu --scale tiny --frame-size 56x84 --check-frames 2": a local check).
# Run from the project root:
#   export VAMBA_CODE_COMMIT=<commit>  # recorded in the JSON (the copy on the GPU machine has no .git)
#   export PYTHONPATH=$PWD && bash scripts/gpu/vision.sh   # pytest from .whl/ if missing, into a private folder
set -u
# Wheels this script installs (pytest, decord) go to a folder only this user can write: a fixed /tmp path on
# PYTHONPATH would import whatever another local user put there.
SITE=$(mktemp -d)
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/vamba-out}
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/nvidia_smi.txt" 2>&1
python3 -c "import json, torch, transformers, vamba.models.attention as a; print(json.dumps({
'torch': torch.__version__, 'transformers': transformers.__version__, 'flash_attn': a.flash_attn_available(),
'torch_varlen': a.torch_varlen_available()}))" 2>&1 | tee -a "$OUT/nvidia_smi.txt"

TAG=${TAG:-h200}
# NOTE: the script stops itself at its budget (later frame counts recorded as skipped); the timeout is the hard stop.
timeout ${BENCH_TIMEOUT:-330} python3 scripts/bench_vision.py --out-dir "$OUT" --tag "$TAG" \
  --budget-s ${BUDGET_S:-170} ${FRAMES:+--frames $FRAMES} ${BENCH_ARGS:-} > "$OUT/bench_vision.log" 2>&1
echo "bench rc=$?"
grep -vE "INFO|Warning|warn" "$OUT/bench_vision.log" | tail -25

left=$(( ${CALL_LIMIT_S:-560} - SECONDS ))
if [ "$left" -gt 45 ]; then
  python3 -c "import pytest" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --target "$SITE" \
    .whl/pytest-*.whl .whl/pluggy-*.whl .whl/iniconfig-*.whl 2>/dev/null
  VAMBA_GPU_REPORT="$OUT/vision_gpu_compare.jsonl" timeout $left python3 -m pytest -q -p no:cacheprovider -rfE \
    tests/gpu/test_vision_gpu.py -m gpu > "$OUT/gpu_vision_tests.log" 2>&1
  echo "gpu tests rc=$?"
  tail -5 "$OUT/gpu_vision_tests.log"
else
  echo "gpu tests not run: ${left}s left" | tee "$OUT/gpu_vision_tests.log"
fi
