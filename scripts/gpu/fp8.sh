#!/bin/bash
# One call on the lent GPU (<= 10 minutes) for FP8 (issue 33, docs/fp8.md), then the GPU tests of every issue:
#   1. the efficiency benchmark at 7B, model fp8=all then bf16, at the goals' points (the 1,024-frame and the hour's
#      prefill, the stage-2 whole-LLM training step at 1,024 frames; in the bf16 run also transformers' Qwen2-VL-7B
#      prefill at 1,024 frames as users run it): efficiency_<tag>_{fp8,bf16}.json (rows carry `precision`), and
#      fp8_speed_<tag>.md, the two side by side with both floors and the goals;
#   2. scripts/fp8_accuracy.py at 7B (64 frames): fp8_accuracy_<tag>.json (ACCURACY=0 skips it);
#   3. every GPU correctness test (scripts/gpu/tests.sh -rA: one line per test) with what is left.
# PROFILE=1: every point also under torch.profiler (profile_<tag>_*.txt: where FP8's time goes; POINTS= narrows it).
# Carried as .whl/ (`bash scripts/deps/gpu_wheels.sh whl`): causal_conv1d-*.tar.xz (the wheel's files), mamba_ssm-*.tar.gz
# (sdist). Run from the root:
#   VAMBA_CODE_COMMIT=<commit> bash scripts/gpu/fp8.sh
set -u
OUT=${OUT:-/tmp/vamba-out}
# Wheels go to a folder only this user can write: a fixed /tmp path on PYTHONPATH would import what others put there.
SITE=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH=$SITE:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia_smi.txt" 2>&1
tar xJf .whl/causal_conv1d-*.tar.xz -C "$SITE"
rm -rf /tmp/mamba-src && mkdir -p /tmp/mamba-src && tar xzf .whl/mamba_ssm-*.tar.gz -C /tmp/mamba-src
(cd /tmp/mamba-src/mamba_ssm-* && MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE \
  python3 -m pip install -q --no-deps --no-build-isolation --target "$SITE" .) > /dev/null 2>&1
python3 -c "import json, vamba.ops; print(json.dumps(vamba.ops.available()))" 2>&1 | tail -1 | tee -a "$OUT/nvidia_smi.txt"
TAG=$(python3 -c "import torch; from vamba.bench.build import device_tag; print(device_tag(torch.device('cuda'))[1])")
echo "install: $SECONDS s"


POINTS=${POINTS:-"vamba:prefill:1024,vamba:prefill:3600,vamba:train:1024/512"}
for precision in fp8 bf16; do  # FP8 first: the rows the call is for (bf16's exist from earlier calls)
  left=$(( ${CALL_S:-575} - SECONDS - 100 ))
  [ $left -lt 60 ] && { echo "efficiency $precision not run: ${left}s left"; continue; }
  extra="points=[$POINTS,qwen2_vl:prefill:1024]"; fp8=none
  [ $precision = fp8 ] && { extra="points=[$POINTS]"; fp8=all; }
  timeout $left python3 scripts/bench_efficiency.py out="$OUT" tag="${TAG}_$precision" fp8=$fp8 "$extra" \
    budget_s=$((left - 20)) ${PROFILE:+profile=true} > "$OUT/bench_$precision.log" 2>&1
  echo "efficiency $precision rc=$? at $SECONDS s"
  rm -f "$OUT"/efficiency_${TAG}_${precision}_*.png
  python3 - "$OUT/efficiency_${TAG}_$precision.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print({k: d.get(k) for k in ("matmul_tflops", "fp8_matmul_tflops")})
for r in d["rows"]:
    print({k: r.get(k) for k in ("model", "mode", "frames", "precision", "status", "total_ms", "vision_ms", "llm_ms",
                                 "llm_mfu", "peak_gib")})
EOF
done

# the FP8 column beside bf16, with both floors and the issue's goals (vamba.bench.efficiency_report.fp8_markdown)
python3 -c "
import json, sys
from vamba.bench.efficiency_report import fp8_markdown
print(fp8_markdown(*(json.load(open(f'$OUT/efficiency_${TAG}_{p}.json')) for p in ('bf16', 'fp8'))), end='')" \
  > "$OUT/fp8_speed_$TAG.md" && cat "$OUT/fp8_speed_$TAG.md"
left=$(( ${CALL_S:-575} - SECONDS - 10 ))
if [ $left -gt 60 ] && [ "${ACCURACY:-1}" = 1 ]; then
  timeout $left python3 scripts/fp8_accuracy.py out="$OUT" size=7b frames=64 > "$OUT/fp8_accuracy.log" 2>&1
  echo "accuracy rc=$? at $SECONDS s"; grep -v INFO "$OUT/fp8_accuracy.log" | tail -40
fi
left=$(( ${CALL_S:-575} - SECONDS - 5 ))
if [ $left -gt 30 ]; then
  timeout $left bash scripts/gpu/tests.sh -rA tests/gpu > "$OUT/gpu_tests.log" 2>&1
  echo "gpu tests rc=$? at $SECONDS s"; grep -E "^(PASSED|FAILED|ERROR)|passed|failed" "$OUT/gpu_tests.log" | tail -15 | cut -c1-300
fi
echo "done at $SECONDS s"
