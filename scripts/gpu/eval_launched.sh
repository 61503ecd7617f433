#!/bin/bash
# `vamba eval` as launched, on one GPU (about 10 minutes on one H100/H200 with 16 CPU cores): how busy the GPU
# stays with the videos decoded ahead by worker processes (model.decode_workers, auto: cores - 1), against the
# in-process path (decode_workers=0) on the first video, and the hours of the full LVBench and Video-MME runs
# (vamba/bench/eval_launched.py; docs/reproduce.md, "How long it takes"). It builds hour-long 30 fps H.264 files in
# LVBench's layout (12 at 640x360, 1 at 1280x720, 15 questions each; a clip encoded once and remuxed: seconds a
# file) and runs the released settings (1024 frames, edges 256/560, greedy) on the checkpoint in $VAMBA_CKPT.
# Expected time, estimated, not measured (one decoder core reads an hour at 640x360 in minutes, issue 30; 720p costs
# more): making the files ~1.5 min, the run with decode workers ~5 min (the 720p video, listed first, sets the pace),
# the in-process video ~2 min, the Video-MME decode ~1 min. To fit 10-minute calls, make the files in a call of their
# own first: BUILD_ONLY=1 (WORK, on the machine, keeps them for the next call while it stays warm).
#
# Wheels (carried as .whl/): decord-0.6.0-py3-none-manylinux2010_x86_64.whl (13 MB, always needed) and
# av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl (35 MB, abi3: Python 3.12 too; only to make the files). With the
# kernels' wheels (25 MB) that is more than one call carries (64 MiB), so, project root, two calls on a warm machine:
#   # 1. the files (.whl/ = decord + av): WORK keeps them for the next call
#   BUILD_ONLY=1 bash scripts/gpu/eval_launched.sh
#   # 2. the runs (.whl/ = the kernels' install.sh and wheels + decord)
#   export VAMBA_CODE_COMMIT=<commit>   # recorded in the JSON (the copy on the GPU machine has no .git)
#   export VAMBA_CKPT=/path/to/checkpoint   # e.g. the released Vamba-Qwen2-VL-7B, or random 7B weights saved by the lead
#   bash .whl/install.sh && export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu/eval_launched.sh
#
# Files in $OUT (4): eval_launched_$TAG.json (rewritten after every stage: a run cut short keeps what it measured),
# eval_launched.log (the benchmark's output), machine.txt (nvidia-smi, cores, /dev/shm, versions), mem.log (host
# memory every 3 s).
# Knobs (environment): VIDEOS ("1280x720:1 640x360:12"), QUESTIONS (15), BASELINE_VIDEOS (1), SECONDS_PER_VIDEO (3600),
# VIDEOMME ("90 600 2700": durations decoded for the Video-MME estimate), BENCH_TIMEOUT (540), BENCH_ARGS (more
# flags, e.g. "--decode-workers 8 --num-frames 512"), TAG (default: the GPU kind), WORK (/tmp/vamba-eval-launched).
# Exit code non-zero when the benchmark failed, timed out or the two paths answered differently; the reason is the
# last line printed.
set -u
# Wheels this script installs go to a folder only this user can write: a fixed /tmp path on PYTHONPATH would import
# whatever another local user put there.
SITE=$(mktemp -d)
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/vamba-out}
WORK=${WORK:-/tmp/vamba-eval-launched}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled
# Host memory every 3 s into $OUT/mem.log (available GiB; the decode workers' resident memory in all): on
# 2026-12-07 the kernel killed decode workers for memory and the call's files did not say so.
t0=$SECONDS
( while sleep 3; do
    avail=$(awk '/MemAvailable/ {print int($2 / 1048576)}' /proc/meminfo 2>/dev/null)
    workers=$(ps -eo rss,args 2>/dev/null | awk '/spawn_main/ && !/awk/ {s += $1} END {print int(s / 1048576)}')
    echo "$((SECONDS - t0)) s: ${avail} GiB available, spawned processes (the decode workers) ${workers} GiB" >> "$OUT/mem.log"
  done ) &
MEMLOG=$!
trap 'kill $MEMLOG 2>/dev/null' EXIT
MACHINE="$OUT/machine.txt"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  echo "cores: $(nproc)"; df -h /dev/shm 2>&1 | tail -1 | sed 's/^/dev-shm: /'
} > "$MACHINE"
for pkg in decord av; do
  if ! python3 -c "import $pkg" 2>/dev/null && ls .whl/$pkg-*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target "$SITE" .whl/$pkg-*.whl >> "$MACHINE" 2>&1
  fi
done
python3 -c "import decord, json, vamba.ops; print('decord', decord.__version__, json.dumps(vamba.ops.available()))" \
  >> "$MACHINE" 2>&1 || { cat "$MACHINE"; echo "FAILED: decord missing (its wheel in .whl/?)"; exit 1; }
# PyAV only makes the files (a later call finds them in WORK)
python3 -c "import av; print('av', av.__version__)" >> "$MACHINE" 2>&1 || echo "no PyAV: the files must be in $WORK" \
  >> "$MACHINE"
cat "$MACHINE"
if [ -z "${BUILD_ONLY:-}" ] && { [ -z "${VAMBA_CKPT:-}" ] || [ ! -d "$VAMBA_CKPT" ]; }; then
  echo "FAILED: VAMBA_CKPT=${VAMBA_CKPT:-} is not a checkpoint directory"; exit 1
fi
TAG_ARGS=${TAG:+--tag $TAG}
if [ -n "${BUILD_ONLY:-}" ]; then TAG_ARGS="$TAG_ARGS --build-only"; fi
timeout "${BENCH_TIMEOUT:-540}" python3 scripts/bench_eval_launched.py --model "${VAMBA_CKPT:-none}" --out "$OUT" \
  --work "$WORK" --videos ${VIDEOS:-1280x720:1 640x360:12} --questions "${QUESTIONS:-15}" \
  --baseline-videos "${BASELINE_VIDEOS:-1}" --seconds "${SECONDS_PER_VIDEO:-3600}" \
  --videomme-durations ${VIDEOMME-90 600 2700} $TAG_ARGS ${BENCH_ARGS:-} > "$OUT/eval_launched.log" 2>&1
rc=$?
grep -vE "INFO|Warning|warn|Loading weights" "$OUT/eval_launched.log" | tail -20
if [ -n "${BUILD_ONLY:-}" ]; then
  [ $rc -eq 0 ] && echo "OK: files made in $WORK" || echo "FAILED: making the files (exit code $rc); see eval_launched.log"
  exit $rc
fi
python3 - "$OUT" "$rc" <<'EOF'
import json, sys
from pathlib import Path
out, rc = Path(sys.argv[1]), int(sys.argv[2])
found = sorted(out.glob("eval_launched_*.json"))
if not found:
    sys.exit(f"FAILED: no eval_launched_*.json (benchmark exit code {rc}); see eval_launched.log")
r = json.loads(found[-1].read_text())
keys = ("gpu_busy_frac", "gpu_busy_frac_in_process", "seconds_per_video", "seconds_per_video_in_process",
        "seconds_per_question", "full_lvbench_hours_1gpu", "full_lvbench_hours_8gpu", "videomme_hours_1gpu",
        "videomme_hours_8gpu", "answers_equal")
print(f"{r['device']}, commit {r['code_commit']}, {r['cpu_cores']} cores, decode_workers "
      f"{r['settings']['decode_workers']}:")
for k in keys:
    print(f"  {k}: {r.get(k)}")
if rc == 124:
    sys.exit("FAILED: the benchmark ran past BENCH_TIMEOUT (the JSON has the stages it finished)")
if rc != 0:
    sys.exit(f"FAILED: the benchmark exited with {rc}; see eval_launched.log")
if r.get("answers_equal") is False:
    sys.exit("FAILED: decode workers and the in-process path answered differently")
print(f"OK: {found[-1].name}")
EOF
