#!/bin/bash
# One call on the lent H100 (about 8 minutes): the Mamba-2 block benchmark at VAMBA-7B sizes on long inputs (153k and
# 612k tokens, the rows scripts/gpu/kernels.sh leaves out; the 38k row is in docs/results/mamba2_bench_h100.json),
# then the model-level GPU tests with every error recorded.
# Run from the project root with the kernel wheels carried as .whl/:
#   bash .whl/install.sh && export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu/mamba2_long.sh
set -u
OUT=${OUT:-/tmp/vamba-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia_smi.txt" 2>&1
# Autotuned kernels, as users run them (the first call of each kernel autotunes: reps are timed after it).
timeout ${BENCH_TIMEOUT:-300} python3 scripts/bench_mamba2.py --what block --tokens 153000 612000 --reps 3 \
  --reference-tokens 0 --out "$OUT/mamba2_block_bench.json" > "$OUT/bench.log" 2>&1
echo "bench rc=$?"
tail -4 "$OUT/bench.log"
# MAMBA_DETERMINISTIC=1: one Triton config per kernel instead of autotuning (same math; minutes less compile).
MAMBA_DETERMINISTIC=1 VAMBA_GPU_REPORT="$OUT/model_gpu_compare.jsonl" timeout ${TEST_TIMEOUT:-200} python3 -m pytest -q \
  -p no:cacheprovider -rfE tests/gpu/test_model_gpu.py > "$OUT/model_tests.log" 2>&1
echo "model tests rc=$?"
grep -E "passed|failed" "$OUT/model_tests.log" | tail -2
grep -E "^(FAILED|E  +AssertionError)" "$OUT/model_tests.log" | cut -c1-400 | head -8
python3 - "$OUT/model_gpu_compare.jsonl" <<'PY'
import json, os, sys
rows = [json.loads(line) for line in open(sys.argv[1])] if os.path.exists(sys.argv[1]) else []
worst = sorted((r for r in rows if "err" in r), key=lambda r: r["err"] - 2 * r["err_reference_same_precision"], reverse=True)
for r in worst[:12]:
    print(f"{r['test'][:90]:<92}{r['err']:9.2e}{r['err_reference_same_precision']:9.2e}")
for r in rows:
    if "err" not in r:
        print(r["test"], "worst:", sorted(((v, k) for k, v in r.items() if k != "test"), reverse=True)[:4])
PY
