#!/bin/bash
# One call on ONE lent GPU (H200), about 5 minutes: context parallelism (docs/context_parallel.md).
#   1. kernels (1 process): the Mamba-2 state passing through mamba-ssm's chunked scan and causal-conv1d, the
#      cross-attention log-sum-exp combine through the fused attention kernel, against one-shot and reference.
#   2. check (2 processes on the GPU, gloo): a small VAMBA with the CUDA kernels, CP 2 vs one process.
#   3. measure (2 processes on the GPU, gloo, each capped at half the GPU's memory): the 7B model at 2048 frames
#      (640x360), train_shared then stage 1 (MODES): per-rank peak memory and step time, beside the memory
#      model's prediction (stage 1 is predicted at 69.8 GiB against the 69.9 GiB cap: it may not fit).
# Files in $OUT: context_parallel_$TAG.json (all parts merged; also written to docs/results/ when run from a
# checkout), cp_*.json per part, *.log, nvidia_smi.txt. Exit status: non-zero if any part failed or a check
# was outside its tolerance (the logs and JSON say which).
# Run from the project root, with the wheels folder carried as .whl/:
#   export VAMBA_CODE_COMMIT=<commit>  # recorded in the JSON (the copy on the GPU machine has no .git)
#   bash .whl/install.sh && export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu/context_parallel.sh
set -u
OUT=${OUT:-/tmp/vamba-out}
TAG=${TAG:-h200}
FRAMES=${FRAMES:-2048}
MODES=${MODES:-train_shared stage1}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 OMP_NUM_THREADS=4
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia_smi.txt" 2>&1
python3 -c "import json, vamba.ops; print(json.dumps(vamba.ops.available()))" 2>&1 | tee -a "$OUT/nvidia_smi.txt"
B=scripts/bench_context_parallel.py
failed=""
run() {  # name, timeout, command...
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc"
  grep -vE "INFO|Warning|warn" "$OUT/$name.log" | tail -6
  [ $rc = 0 ] || failed="$failed $name(rc=$rc)"
}
# NOTE: a variable, not a shell function: `timeout` runs programs only.
TORCHRUN2="python3 -m torch.distributed.run --standalone --nproc_per_node 2"

# MAMBA_DETERMINISTIC=1: one Triton config per kernel instead of autotuning each shape (same math; the
# autotuning of this part's fp32/bf16 forward and backward shapes alone ran past 120 s, H200, 2026-12-01)
MAMBA_DETERMINISTIC=1 run cp_kernels 200 python3 $B kernels --out "$OUT/cp_kernels.json"
run cp_check 120 $TORCHRUN2 $B check --out "$OUT/cp_check.json"
parts=("$OUT/cp_kernels.json" "$OUT/cp_check.json")
for mode in $MODES; do
  run "cp_${mode}_${FRAMES}f" 180 $TORCHRUN2 $B measure --mode "$mode" --frames "$FRAMES" \
    --out "$OUT/cp_${mode}_${FRAMES}f.json"
  parts+=("$OUT/cp_${mode}_${FRAMES}f.rank0.json" "$OUT/cp_${mode}_${FRAMES}f.rank1.json")
done
python3 $B merge --out "$OUT/context_parallel_$TAG.json" "${parts[@]}"
[ -d docs/results ] && cp "$OUT/context_parallel_$TAG.json" docs/results/
if [ -n "$failed" ]; then
  echo "FAILED:$failed"
  exit 1
fi
echo "context parallelism: all parts passed"
