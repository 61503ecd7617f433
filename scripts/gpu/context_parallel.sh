#!/bin/bash
# One call on ONE lent GPU (H200), about 5-10 minutes: context parallelism (docs/context_parallel.md).
#   1. tests (tests/gpu/test_context_parallel_gpu.py, the checks): the Mamba-2 state passing through mamba-ssm's
#      chunked scan and causal-conv1d, the cross-attention log-sum-exp combine through the fused attention kernel
#      (float32 and bfloat16, forward and the gradients of q, k and v), against one shot; a small VAMBA with the
#      CUDA kernels, CP 2 (two processes on the GPU, gloo) vs one process.
#   2. measure (2 processes on the GPU, gloo, each capped at half the GPU's memory): the 7B model at FRAMES frames
#      (640x360), train_shared then stage 1 (MODES): per-rank peak memory and step time, beside the memory
#      model's prediction. An out-of-memory point is recorded and the next, smaller frame count of FRAMES is
#      tried, so that each mode lands a point (train_shared OOMed at 2048 frames on the H200, 2026-12-02).
# Every part runs with MAMBA_DETERMINISTIC=1: one Triton config per mamba-ssm kernel instead of autotuning each
# shape in each process (the kernel checks alone ran past 120 s autotuning, and the two CP 2 processes
# autotuned at once), with deterministic per-tile reductions in its backward (a few hundred MB of workspace at
# 7B and 150k tokens per rank; the same math). The measure part also uses expandable segments (a third of the
# 2048-frame OOM was reserved-but-unallocated memory).
# Files in $OUT: context_parallel_$TAG.json (the measured points merged; also written to docs/results/ when run
# from a checkout), cp_*.json per point, *.log (cp_tests.log: pytest's report with the measured errors),
# nvidia_smi.txt. Exit status: non-zero if a test failed, a part failed, or a mode ran out of memory at every frame
# count (the logs and JSON say which).
# Run from the project root, with the wheels folder carried as .whl/:
#   export VAMBA_CODE_COMMIT=<commit>  # recorded in the JSON (the copy on the GPU machine has no .git)
#   bash .whl/install.sh && export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu/context_parallel.sh
set -u
OUT=${OUT:-/tmp/vamba-out}
TAG=${TAG:-h200}
FRAMES=${FRAMES:-2048 1536 1024}
MODES=${MODES:-train_shared stage1}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 OMP_NUM_THREADS=4 MAMBA_DETERMINISTIC=1
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
statuses() {  # the "status" of each rank's JSON ("missing" when a rank wrote none)
  python3 -c 'import json, os, sys
print(" ".join(json.load(open(p)).get("status", "?") if os.path.exists(p) else "missing" for p in sys.argv[1:]))' "$@"
}
# NOTE: a variable, not a shell function: `timeout` runs programs only.
TORCHRUN2="python3 -m torch.distributed.run --standalone --nproc_per_node 2"

run cp_tests 420 bash scripts/gpu/tests.sh tests/gpu/test_context_parallel_gpu.py -s
parts=()
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
for mode in $MODES; do
  landed=""
  for frames in $FRAMES; do
    name="cp_${mode}_${frames}f"
    before=$failed
    run "$name" 180 $TORCHRUN2 $B measure --mode "$mode" --frames "$frames" --out "$OUT/$name.json"
    parts+=("$OUT/$name.rank0.json" "$OUT/$name.rank1.json")
    status=$(statuses "$OUT/$name.rank0.json" "$OUT/$name.rank1.json")
    echo "$name: ranks $status"
    case " $status " in
      *" oom "*) failed=$before ;;  # a point (recorded in the JSON), not a failure: try fewer frames
      *) landed=$frames; break ;;
    esac
  done
  [ -n "$landed" ] || failed="$failed cp_${mode}(out of memory at each of: $FRAMES)"
done
python3 $B merge --out "$OUT/context_parallel_$TAG.json" "${parts[@]}"
[ -d docs/results ] && cp "$OUT/context_parallel_$TAG.json" docs/results/
if [ -n "$failed" ]; then
  echo "FAILED:$failed"
  exit 1
fi
echo "context parallelism: all parts passed"
