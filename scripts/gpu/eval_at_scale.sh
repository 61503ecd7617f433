#!/bin/bash
# One call on the lent GPU for issue 30 when the kernels' wheel cannot travel beside PyAV's (64 MiB a call): the
# packages come as the wheels' files in .whl2/ (av-*.tar.xz, decord-*.tar.xz, pywheels.tar.xz: omegaconf and hydra,
# which `vamba eval`'s config needs (its 2026-12-07 run stopped without them); mamba_ssm-*.tar.gz, its sdist),
# causal-conv1d stays out (the Mamba-2 convolution runs its PyTorch reference: prefill only, decoding never uses it).
# `bash scripts/deps/gpu_wheels.sh whl2` makes the folder.
#   1. a 7B checkpoint with random weights (scripts/random_checkpoint.py);
#   2. scripts/gpu/eval_launched.sh on it: hour-long files in LVBench's layout, `vamba eval` with decode workers and
#      in process; answers capped at MAX_NEW_TOKENS (8: a multiple-choice reply; random weights never stop early);
#   3. scripts/gpu/decode.sh with what is left (the decoding sweep at 1,024 and 3,600 frames).
#   VAMBA_CODE_COMMIT=<commit> bash scripts/gpu/eval_at_scale.sh
set -u
OUT=${OUT:-/tmp/vamba-out}
mkdir -p "$OUT"
# Wheels go to a folder only this user can write: a fixed /tmp path on PYTHONPATH would import what others put there.
SITE=$(mktemp -d)
for t in .whl2/*.tar.xz; do tar xJf "$t" -C "$SITE"; done
rm -rf /tmp/mamba-src && mkdir -p /tmp/mamba-src && tar xzf .whl2/mamba_ssm-*.tar.gz -C /tmp/mamba-src
(cd /tmp/mamba-src/mamba_ssm-* && MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE \
  python3 -m pip install -q --no-deps --no-build-isolation --target "$SITE" .) > /dev/null 2>&1
export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
# the checkpoint scripts/gpu/train_launched.sh left on a warm machine, else a new one (~25 s)
CKPT=$PWD/.ckpt/vamba-7b-random
[ -f $CKPT/random_checkpoint.json ] || python3 scripts/random_checkpoint.py size=7b out=$CKPT device=cuda 2>&1 | tail -1
echo "checkpoint at $SECONDS s"
VAMBA_CKPT=$CKPT VIDEOS=${VIDEOS:-"1280x720:1 640x360:5"} QUESTIONS=${QUESTIONS:-5} \
  VIDEOMME=${VIDEOMME-"600"} BENCH_TIMEOUT=${EVAL_TIMEOUT:-330} \
  BENCH_ARGS="--max-new-tokens ${MAX_NEW_TOKENS:-8} ${BENCH_ARGS:-}" bash scripts/gpu/eval_launched.sh
echo "eval at $SECONDS s"
left=$(( ${CALL_S:-575} - SECONDS ))
if [ $left -gt 120 ]; then
  TEST_TIMEOUT=$((left / 3)) BENCH_TIMEOUT=$((left * 2 / 3 - 10)) bash scripts/gpu/decode.sh
fi
