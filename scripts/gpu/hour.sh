#!/bin/bash
# The hour in one GPU call (<= 480 s on one H200): the efficiency benchmark's goal points in order, VAMBA-7B beside
# transformers' Qwen2-VL-7B, random bf16 weights, 640x360 frames, the GPU capped at an 80 GB card's room (79.2 GiB),
# PyTorch's expandable segments (long-video training is bounded by fragmentation otherwise), VAMBA's vision tower
# compiled, 512-frame streaming pieces (docs/bench.md, "The hour"):
#   VAMBA prefill 1024, Qwen2-VL prefill 1024, VAMBA prefill 3600 (the hour), the hour answered end to end from an
#   mp4 (written here with OpenCV while the models warm up, read back with decord), whole-LLM train 1024 (512 if it
#   does not fit), train_shared and stage 1 at 256 and 1024, train 256, Qwen2-VL train 256, VAMBA prefill 256, 512,
#   2048 (vamba.bench.plan.GOAL_POINTS). Points predicted past BUDGET_S are recorded as skipped; the JSON is
#   rewritten after every point, so a run cut short keeps what it measured.
#
# Exact command (project root; the wheels folder carried as .whl/, decord's wheel in it):
#   export VAMBA_CODE_COMMIT=<commit>   # recorded in the JSON (the copy on the GPU machine has no .git)
#   bash .whl/install.sh && export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu/hour.sh
#
# Files in $OUT (6): efficiency_$TAG.{json,md}, efficiency_${TAG}_{memory,time}.png, hour.log (nvidia-smi, the
# kernels found, the benchmark's output), video.log (the mp4 writer). BUDGET_S and BENCH_TIMEOUT (330 s of points,
# hard stop at 400 s) leave room for a command after this one in the same call. Exit code non-zero when the
# benchmark failed, timed out, measured nothing, or a point ended in an error (an out of memory is a result);
# the reason is the last line printed.
#
# CPU smoke test of this whole path (tiny models, a PyAV mp4 from vamba.data.synth; only the GPU lines differ):
#   OUT=/tmp/hour-smoke DEVICE=cpu bash scripts/gpu/hour.sh
set -u
# Wheels this script installs (pytest, decord) go to a folder only this user can write: a fixed /tmp path on
# PYTHONPATH would import whatever another local user put there.
SITE=$(mktemp -d)
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/vamba-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-/tmp/vamba-hour}
mkdir -p "$WORK"
LOG="$OUT/hour.log"
if [ "$DEVICE" = cuda ]; then
  TAG=${TAG:-h200_hour}
  FRAMES=${FRAMES:-3600}
  VIDEO_SIZE=640x360
  POINTS=${POINTS:-goals}
  BENCH_ARGS=${BENCH_ARGS:-memory_gib=79.2 piece_frames=512 workers=12}
  BUDGET_S=${BUDGET_S:-330}
  BENCH_TIMEOUT=${BENCH_TIMEOUT:-400}
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$LOG" 2>&1
  python3 -c "import decord" 2>/dev/null || python3 -m pip install -q --no-deps --target "$SITE" \
    .whl/decord-*.whl >> "$LOG" 2>&1
else  # the CPU smoke test: the same path at the tiny scale
  TAG=${TAG:-cpu_smoke}
  FRAMES=${FRAMES:-12}
  VIDEO_SIZE=84x56
  POINTS=${POINTS:-vamba:prefill:8 qwen2_vl:prefill:8 vamba:prefill:12 vamba:answer_file:12 vamba:train:8/4 \
vamba:train_shared:4 vamba:train_shared:8 vamba:stage1:4 vamba:stage1:8 vamba:train:4 qwen2_vl:train:4 vamba:prefill:4}
  BENCH_ARGS=${BENCH_ARGS:-device=cpu scale=tiny piece_frames=4 workers=2 answer_tokens=4 reps=1}
  BUDGET_S=${BUDGET_S:-300}
  BENCH_TIMEOUT=${BENCH_TIMEOUT:-400}
  echo "cpu smoke test: no GPU" > "$LOG"
fi
python3 -c "import json, vamba.ops; print(json.dumps(vamba.ops.available()))" >> "$LOG" 2>&1

# 1. The hour as an mp4, written in the background while the models warm up (the benchmark waits for it): smooth
# moving colour ramps at 1 fps. On the GPU machine with OpenCV (it has no PyAV), on the CPU with PyAV.
VIDEO="$WORK/hour_${VIDEO_SIZE}_${FRAMES}.mp4"
rm -f "$VIDEO" "$VIDEO.failed"
if [ "$DEVICE" = cuda ]; then
  python3 - "$VIDEO" "$FRAMES" > "$OUT/video.log" 2>&1 <<'EOF' &
import os, sys, time
path, n, (w, h) = sys.argv[1], int(sys.argv[2]), (640, 360)
try:  # a failure leaves <path>.failed, which the benchmark reads instead of waiting for the video
    import cv2
    import numpy as np
    started, part = time.time(), path + ".part.mp4"
    writer = cv2.VideoWriter(part, cv2.VideoWriter_fourcc(*"mp4v"), 1.0, (w, h))
    assert writer.isOpened(), "cv2.VideoWriter could not open an mp4v writer"
    x, y = np.arange(w, dtype=np.int32)[None, :], np.arange(h, dtype=np.int32)[:, None]
    for i in range(n):
        writer.write(np.stack([(x + 3 * i) % 256 + 0 * y, (y + 5 * i) % 256 + 0 * x, (x + y + 7 * i) % 256], -1).astype(np.uint8))
    writer.release()
    os.replace(part, path)
except BaseException as e:
    open(path + ".failed", "w").write(f"{type(e).__name__}: {e}")
    raise
print(f"wrote {path}: {n} frames {w}x{h} in {time.time() - started:.1f} s, {os.path.getsize(path) / 2**20:.1f} MiB")
EOF
else
  python3 - "$VIDEO" "$FRAMES" > "$OUT/video.log" 2>&1 <<'EOF' &
import os, sys
path, n, (w, h) = sys.argv[1], int(sys.argv[2]), (84, 56)
try:
    import numpy as np
    from vamba.data.synth import write_mp4
    x, y = np.arange(w)[None, :], np.arange(h)[:, None]
    frames = np.stack([np.stack([(x + 3 * i) % 256 + 0 * y, (y + 5 * i) % 256 + 0 * x, (x + y + 7 * i) % 256], -1)
                       for i in range(n)]).astype(np.uint8)
    write_mp4(path + ".part.mp4", frames, 1)
    os.replace(path + ".part.mp4", path)
except BaseException as e:
    open(path + ".failed", "w").write(f"{type(e).__name__}: {e}")
    raise
print(f"wrote {path}: {n} frames {w}x{h}")
EOF
fi
WRITER=$!

# 2. The benchmark: the goals' points first; BUDGET_S skips what is predicted not to fit, the timeout is the hard stop.
timeout "$BENCH_TIMEOUT" python3 scripts/bench_efficiency.py out="$OUT" tag="$TAG" frame_size="$VIDEO_SIZE" \
  budget_s="$BUDGET_S" answer_video="$VIDEO" points="$(echo $POINTS | tr ' ' ,)" $BENCH_ARGS >> "$LOG" 2>&1
rc=$?
wait "$WRITER" 2>/dev/null
JSON="$OUT/efficiency_$TAG.json"
if [ -f "$JSON" ] && [ ! -f "$OUT/efficiency_$TAG.md" -o $rc -ne 0 ]; then  # cut short: the summary of what it has
  python3 scripts/bench_efficiency.py report_only="$JSON" >> "$LOG" 2>&1
fi
cat "$OUT/video.log"
head -3 "$LOG"
grep -vE "INFO|Warning|warn|^\|" "$LOG" | grep -E "warm-up|frames|Error|error" | tail -25

# 3. The short table, then the verdict (the reason last).
python3 - "$JSON" "$rc" "${SECONDS}" <<'EOF'
import json, sys
from pathlib import Path
path, rc, seconds = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if not path.exists():
    sys.exit(f"FAILED: no results JSON ({path}); benchmark exit code {rc}; see hour.log")
result = json.loads(path.read_text())
rows = result["rows"]
print(f"\n{result['device']}, commit {result['code_commit']}, matmul {result['matmul_tflops']:.0f} TFLOP/s, "
      f"cap {result['memory_cap_gib']} GiB, {seconds} s")
print(f"{'point':<28}{'status':<12}{'s':>8}{'vision s':>10}{'LLM s':>8}{'GiB':>7}{'LLM MFU':>9}{'vis MFU':>9}")
for r in rows:
    name = f"{r['model']}:{r['mode']}:{r['frames']}"
    if r.get("status") != "ok":
        print(f"{name:<28}{r.get('status', '-')[:60]}")
        continue
    if r["mode"] == "answer_file":
        print(f"{name:<28}{'ok':<12}first token {r['time_to_first_token_ms'] / 1e3:.2f} s, encode "
              f"{r['encode_ms'] / 1e3:.2f} s, {r['decode_tokens_per_s']:.1f} tok/s, {r.get('peak_gib', 0):.1f} GiB, "
              f"host decode {r['host_decode_s']:.1f} s + resize {r['host_resize_s']:.1f} s (threads), "
              f"GPU waited {r['host_wait_s']:.2f} s")
        continue
    pct = lambda k: f"{100 * r[k]:.0f}%" if r.get(k) is not None else "-"
    print(f"{name:<28}{'ok':<12}{r['total_ms'] / 1e3:8.2f}{r['vision_ms'] / 1e3:10.2f}{r['llm_ms'] / 1e3:8.2f}"
          f"{r.get('peak_gib', 0):7.1f}{pct('llm_mfu'):>9}{pct('vision_mfu'):>9}")
summary = Path(str(path)[:-5] + ".md")
if summary.exists():
    text = summary.read_text()
    print(text[text.index("## Goals"):].split("\n\nTime ratio")[0])
errors = [f"{r['model']}:{r['mode']}:{r['frames']}: {r.get('error', '')[:300]}" for r in rows if r.get("status") == "error"]
measured = sum(r.get("status") == "ok" for r in rows)
if rc == 124:
    sys.exit(f"FAILED: the benchmark ran past its timeout ({measured} points measured; the JSON has them)")
if rc != 0:
    sys.exit(f"FAILED: the benchmark exited with {rc} ({measured} points measured); see hour.log")
if errors:
    sys.exit("FAILED: points ended in an error: " + " | ".join(errors))
if not measured:
    sys.exit("FAILED: no point was measured")
print(f"OK: {measured} points measured, {sum(r.get('status') == 'oom' for r in rows)} out of memory, "
      f"{sum(str(r.get('status', '')).startswith('skipped') for r in rows)} skipped by the time budget")
EOF
