#!/bin/bash
# One call on the lent GPU for the VAMBA model: kernel packages, the model's GPU tests, then the
# VAMBA vs Qwen2-VL benchmark. Everything worth keeping goes to $OUT. Run from the project root, with
# the wheels folder at .whl/:
#   bash .whl/install.sh && export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu/model.sh
set -u
OUT=${OUT:-/tmp/vamba-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia_smi.txt" 2>&1
python3 -c "import json, vamba.ops, vamba.models.attention as a; print(json.dumps({**vamba.ops.available(), 'flash_attn': a.flash_attn_available(), 'torch_varlen': a.torch_varlen_available()}))" 2>&1 | tee "$OUT/kernels.txt"
VAMBA_GPU_REPORT="$OUT/model_gpu_compare.jsonl" timeout 300 python3 -m pytest -q -p no:cacheprovider -rfE --durations=6 \
  tests/gpu/test_model_gpu.py -m gpu 2>&1 | tee "$OUT/model_gpu.log" | grep -E "passed|failed|Error|FAILED|s call" | tail -25
timeout 260 python3 scripts/bench_model.py --out "$OUT/model_bench.json" > "$OUT/model_bench.log" 2>&1
echo "bench rc=$?"
tail -14 "$OUT/model_bench.log"
