#!/bin/bash
# Fast decoding in one GPU call (issue 30; about 5 minutes on one H100 or H200): the GPU tests of the split-K decoding
# cross-attention and of the CUDA-graph greedy loop (tests/gpu/test_fast_decode_gpu.py), then the decoding sweep at
# 7B (random bf16 weights, 640x360 frames, 1,024 and 3,600 frames, batch 1, 64 greedy tokens): generate as before
# (decode_attention=reference), generate with the split attention, the static loop eager, the static loop in a CUDA
# graph, each beside the memory-bandwidth floor (vamba/bench/answer.py; docs/inference.md, "Fast decoding").
#
# Exact command (project root; the wheels folder carried as .whl/):
#   export VAMBA_CODE_COMMIT=<commit>   # recorded in the JSON (the copy on the GPU machine has no .git)
#   bash .whl/install.sh && export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu/decode.sh
#
# Files in $OUT (4): answer_decode_<device kind>.json, decode_bench.log, decode_gpu_tests.log, nvidia_smi.txt.
# Knobs: TAG (file name tag), MEM_GIB (cap the GPU memory, e.g. 79.2 on an H200 for an 80 GB card's room),
# BENCH_ARGS (replaces the sweep's arguments), TEST_TIMEOUT / BENCH_TIMEOUT (seconds). Exit code non-zero when the
# tests failed or the sweep failed, timed out or measured nothing; the reason is the last line printed.
#
# CPU smoke test of this whole path (tiny model, CPU tests instead of the GPU ones, no graph):
#   OUT=/tmp/decode-smoke DEVICE=cpu bash scripts/gpu/decode.sh
set -u
# Wheels this script installs (pytest) go to a folder only this user can write: a fixed /tmp path on PYTHONPATH
# would import whatever another local user put there.
SITE=$(mktemp -d)
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/vamba-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
DEVICE=${DEVICE:-cuda}
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/nvidia_smi.txt" 2>&1
  TESTS="tests/gpu/test_fast_decode_gpu.py -m gpu"
  BENCH_ARGS=${BENCH_ARGS:-num_frames=[1024,3600] answer_tokens=64 reps=2 ${MEM_GIB:+memory_gib=$MEM_GIB}}
else
  echo "cpu smoke test: no GPU" > "$OUT/nvidia_smi.txt"
  TESTS="tests/models/test_decode_attention.py tests/inference/test_fast_decode.py"
  BENCH_ARGS=${BENCH_ARGS:-device=cpu scale=tiny num_frames=[4,8] answer_tokens=4 reps=1}
fi
python3 -c "import json, torch, vamba.ops, vamba.models.attention as a; print(json.dumps({'torch': torch.__version__, \
**vamba.ops.available(), 'flash_attn': a.flash_attn_available(), 'torch_varlen': a.torch_varlen_available()}))" \
  >> "$OUT/nvidia_smi.txt" 2>&1
cat "$OUT/nvidia_smi.txt"

# 1. The tests. NOTE: MAMBA_DETERMINISTIC=1 compiles one config per Triton kernel instead of autotuning ~10 (the
# tests encode a small video with the fast Mamba-2 kernels): same math, less compilation.
python3 -c "import pytest" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --target "$SITE" \
  .whl/pytest-*.whl .whl/pluggy-*.whl .whl/iniconfig-*.whl > /dev/null 2>&1
MAMBA_DETERMINISTIC=1 timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider -rfE --durations=5 \
  $TESTS > "$OUT/decode_gpu_tests.log" 2>&1
test_rc=$?
echo "tests rc=$test_rc: $(tail -1 "$OUT/decode_gpu_tests.log")"
grep -E "^(FAILED|ERROR)" "$OUT/decode_gpu_tests.log" | head -10

# 2. The sweep: the JSON is rewritten after every point, so a run cut short keeps what it measured.
timeout "${BENCH_TIMEOUT:-330}" python3 scripts/bench_answer.py out="$OUT" ${TAG:+tag=$TAG} $BENCH_ARGS \
  > "$OUT/decode_bench.log" 2>&1
bench_rc=$?
grep -E "^ *[0-9]+ frames |Error|error" "$OUT/decode_bench.log" | tail -20

# 3. The short table, then the verdict (the reason last).
python3 - "$OUT" "$bench_rc" "$test_rc" "$SECONDS" <<'EOF'
import json, sys
from pathlib import Path
out, bench_rc, test_rc, seconds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
found = sorted(out.glob("answer_decode_*.json"))
if not found:
    sys.exit(f"FAILED: no results JSON in {out}; benchmark exit code {bench_rc}, tests {test_rc}; see decode_bench.log")
from vamba.bench.answer import table
result = json.loads(found[-1].read_text())
print(table(result))
print(f"commit {result['code_commit']}, {seconds} s")
rows = result["rows"]
errors = [f"{r['frames']}:{r['path']}: {r.get('error', '')[:300]}" for r in rows if r["status"] == "error"]
measured = sum(r["status"] == "ok" for r in rows)
if test_rc != 0:
    sys.exit(f"FAILED: the tests exited with {test_rc} (see decode_gpu_tests.log); {measured} points measured")
if bench_rc == 124:
    sys.exit(f"FAILED: the sweep ran past its timeout ({measured} points measured; the JSON has them)")
if bench_rc != 0:
    sys.exit(f"FAILED: the sweep exited with {bench_rc} ({measured} points measured); see decode_bench.log")
if errors:
    sys.exit("FAILED: points ended in an error: " + " | ".join(errors))
if not measured:
    sys.exit("FAILED: no point was measured")
goals = [f"{r['frames']} frames {r['path']}: {r['tokens_per_s']} tokens/s "
         f"({'met' if r['goal_met'] else 'NOT met'}, goal {r['goal_tokens_per_s']})" for r in rows if "goal_met" in r]
print("\n".join(goals))
print(f"OK: tests passed, {measured} points measured, {sum(r['status'] == 'oom' for r in rows)} out of memory")
EOF
