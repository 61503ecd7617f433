#!/bin/bash
# One call on the lent GPU (<= 10 minutes): `vamba train` as researchers launch it, at the paper's scale (issue 29).
#   1. a 7B VAMBA checkpoint with random weights drawn on the GPU and saved (scripts/random_checkpoint.py);
#   2. `vamba train` stage 1 (cross-attention, Mamba-2 blocks, alpha) on 1,024-frame samples of a real 640x360 H.264
#      file decoded by the Dataset in DataLoader workers, DeepSpeed ZeRO-2 in one process, bf16, checkpointing,
#      beside the efficiency benchmark's stage-1 step at 1,024 frames + one optimizer step, on the host's CPUs as the
#      offloaded run steps it (the like-for-like check; the whole-LLM bench point was measured twice on 2026-12-07);
#   3. the same stage-1 run under ZeRO-3, then stage 1 on packed image-caption rows (JPEG and PNG files of mixed sizes
#      written there), with what is left.
# Results (<= 8 files, flat in $OUT): train_launched_<tag>_{zero2,zero3}.json/.md, random_checkpoint.json,
# train_launched.log, nvidia_smi.txt.
# Carried as .whl/: causal_conv1d-*.tar.xz (the wheel's files, debug symbols stripped), decord-*.tar.xz,
# mamba_ssm-*.tar.gz (sdist), pywheels.tar.xz (deepspeed, hydra-core, omegaconf, antlr4, hjson, pydantic: the
# wheels' files), data/*.mp4 (the videos). Run from the project root:
#   VAMBA_CODE_COMMIT=<commit> bash scripts/gpu/train_launched.sh
set -u
OUT=${OUT:-/tmp/vamba-out}
# Wheels go to a folder only this user can write: a fixed /tmp path on PYTHONPATH would import what others put there.
SITE=$(mktemp -d)
mkdir -p "$OUT" "$SITE"
LOG=$OUT/train_launched.log
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
export PYTHONPATH=$SITE:$PWD
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nproc; free -g | head -2; df -h /tmp "$PWD" | tail -2; stat -f -c "/tmp is %T" /tmp
} > "$OUT/nvidia_smi.txt" 2>&1
t0=$SECONDS
# Host memory, every 3 s, into $OUT/mem.log; under 6 GiB available the training runs are killed so that the machine
# (and this call's files) survive: on 2026-12-07 a call at 9 workers left the machine unanswering and returned nothing.
( while sleep 3; do
    avail=$(awk '/MemAvailable/ {print int($2 / 1048576)}' /proc/meminfo)
    echo "$((SECONDS - t0)) s: ${avail} GiB available" >> "$OUT/mem.log"
    [ "$avail" -lt 6 ] && { echo "killing vamba train: ${avail} GiB left" >> "$OUT/mem.log"; pkill -9 -f "vamba.cli train"; }
  done ) &
GUARD=$!
trap 'kill $GUARD 2>/dev/null' EXIT
for t in .whl/causal_conv1d-*.tar.xz .whl/decord-*.tar.xz .whl/pywheels.tar.xz; do tar xJf "$t" -C "$SITE"; done
rm -rf /tmp/mamba-src && mkdir -p /tmp/mamba-src && tar xzf .whl/mamba_ssm-*.tar.gz -C /tmp/mamba-src
(cd /tmp/mamba-src/mamba_ssm-* && MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE \
  python3 -m pip install -q --no-deps --no-build-isolation --target "$SITE" .) >> "$LOG" 2>&1
python3 -c "import json, vamba.ops, deepspeed, hydra, decord; print(json.dumps(vamba.ops.available()), deepspeed.__version__)" \
  2>&1 | tail -2 | tee -a "$OUT/nvidia_smi.txt"
echo "install: $((SECONDS - t0)) s"
GIB=$(python3 -c "import torch; print(int(torch.cuda.get_device_properties(0).total_memory / 2**30))")
TAG=$(python3 -c "import torch; from vamba.bench.build import device_tag; print(device_tag(torch.device('cuda'))[1])")

# On disk, not in /tmp: a memory-backed /tmp would hold the 22.6 GB checkpoint in the host memory the runs need.
CKPT=$PWD/.ckpt/vamba-7b-random
python3 scripts/random_checkpoint.py size=7b out=$CKPT device=cuda 2>&1 | tail -2 | tee -a "$LOG"
cp $CKPT/random_checkpoint.json "$OUT/" 2>/dev/null
VIDEOS="[$(ls .whl/data/*.mp4 | paste -sd,)]"
echo "checkpoint + data ready at $((SECONDS - t0)) s; videos $VIDEOS; ${GIB} GiB GPU"

# 2. like-for-like, ZeRO-2 (the optimizer offloaded on a GPU under 100 GiB: the stage-1 AdamW states need ~47 GB).
# DataLoader workers: 4 (WORKERS= to change; auto_workers sizes them from the host's memory when WORKERS=auto). On
# 2026-12-07 twelve float32 workers at 1,024 frames were killed for host memory (SIGKILL) on the 125 GiB H100 host,
# and at auto's 9 uint8 workers the machine stopped answering. A uint8 sample takes ~9 s on one of this project's
# CPU cores (data_pipeline_cpu_uint8.json): 4 workers give one every ~2.3 s, under a ~10 s step.
WORKERS=${WORKERS:-4}; [ "$WORKERS" = auto ] && WORKERS=
python3 scripts/bench_train_launched.py out=/tmp/l2 checkpoint=$CKPT "videos=$VIDEOS" runs=[like_for_like] \
  tag=${TAG}_zero2 steps=${STEPS:-5} ${WORKERS:+workers=$WORKERS} \
  budget_s=$(( ${CALL_S:-575} - SECONDS - 15 )) >> "$LOG" 2>&1
echo "like_for_like rc=$? at $((SECONDS - t0)) s"
cp /tmp/l2/train_launched_${TAG}_zero2.* "$OUT/" 2>/dev/null; cat /tmp/l2/train_launched_${TAG}_zero2.md 2>/dev/null
grep -E "Error|error:|vamba train:" /tmp/l2/like_for_like.log 2>/dev/null | head -5 | cut -c1-400
python3 -c "
import json, glob
for f in glob.glob('/tmp/l2/train_launched_*.json'):
    d = json.load(open(f))
    for r in d.get('bench_extra', []): print(r)
    for r in d['runs']: print({k: r.get(k) for k in ('name', 'status', 'rc', 'step_s', 'step_s_all', 'bench', 'startup_s', 'data_wait_frac', 'mfu', 'peak_gib')})
" 2>&1 | cut -c1-600

# 3. ZeRO-3, then stage 1 as released (packed image-caption rows), with what is left
left=$(( ${CALL_S:-575} - SECONDS ))
if [ $left -gt 150 ]; then
  python3 scripts/bench_train_launched.py out=/tmp/l3 checkpoint=$CKPT "videos=$VIDEOS" \
    runs=[${LATER_RUNS:-like_for_like_zero3,stage1_packed}] \
    tag=${TAG}_zero3 steps=${STEPS:-6} ${WORKERS:+workers=$WORKERS} bench=false budget_s=$((left - 15)) >> "$LOG" 2>&1
  echo "zero3 rc=$?"
  cp /tmp/l3/train_launched_${TAG}_zero3.* "$OUT/" 2>/dev/null; cat /tmp/l3/train_launched_${TAG}_zero3.md 2>/dev/null
fi
echo "done at $((SECONDS - t0)) s"
