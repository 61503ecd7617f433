#!/bin/bash
# Build, on this (CPU) machine, the folders the one-call GPU scripts carry to the lent GPU machine (Python 3.12,
# torch 2.11 + CUDA 13; no decord, PyAV, DeepSpeed, Hydra, pydantic, mamba-ssm or causal-conv1d there). Both folders
# are ignored by git and lost with a fresh checkout, so each session that needs them runs this first (~1 minute):
#   .whl/   for scripts/gpu/train_launched.sh and fp8.sh (carry [".whl"]; ~37 MB):
#           causal_conv1d-*.tar.xz (the prebuilt wheel's files, debug symbols stripped), decord-*.tar.xz,
#           mamba_ssm-*.tar.gz (sdist, built there without its CUDA extension), pywheels.tar.xz (DeepSpeed, Hydra and
#           their missing dependencies), data/v640_40s.mp4 (40 s of 640x360 30 fps H.264: 1,200 frames, 3.5 MB; a
#           longer file would not fit the call);
#   .whl2/  for scripts/gpu/eval_at_scale.sh (carry [".whl2"]; ~35 MB): av-*.tar.xz (to make the hour-long files
#           there), decord-*.tar.xz, mamba_ssm-*.tar.gz, pywheels.tar.xz (Hydra). A call carries one of the two:
#           the repository (~26 MB) and both would pass the 64 MiB a call takes.
# Versions: those CI tests (scripts/deps/constraints-cpu.txt). The kernels' files come from ../shared/device-wheels
# (DEVICE_WHEELS). Run from the project root with the project's virtual environment active (PyAV makes the video):
#   bash scripts/deps/gpu_wheels.sh [whl|whl2|all]
set -euo pipefail
WHICH=${1:-all}
SHARED=$(realpath "${DEVICE_WHEELS:-../shared/device-wheels}")  # absolute: the unzip below runs in another folder
PINS=scripts/deps/constraints-cpu.txt
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pin() { awk -v n="$1" '$1 ~ "^"n"==" {print $1}' "$PINS" | grep . || { echo "no pin for $1 in $PINS" >&2; exit 1; }; }
# Wheels for the GPU image's Python: binary where there is one, else built here (pure Python, e.g. antlr4).
fetch() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux2010_x86_64 --platform manylinux1_x86_64 -d "$TMP/dl" "$@" 2> "$TMP/err" \
    || { grep -v "is ignored" "$TMP/err"; exit 1; }
}
# The files of the named wheels (and the sdists given, installed pure), packed as one tar.xz.
pack() {
  local out=$1; shift
  rm -rf "$TMP/files" && mkdir -p "$TMP/files"
  for f in "$@"; do
    case $f in
      *.whl) (cd "$TMP/files" && unzip -q -o "$f") ;;
      *) python3 -m pip install -q --no-deps --no-compile --no-build-isolation --target "$TMP/files" "$f" \
           2> "$TMP/err" || { grep -v "is ignored" "$TMP/err"; exit 1; } ;;
    esac
  done
  tar cJf "$out" -C "$TMP/files" .
}
mkdir -p "$TMP/dl"
fetch "$(pin decord)" "$(pin hydra-core)" "$(pin omegaconf)"
python3 -m pip download -q --no-deps --no-binary=:all: -d "$TMP/dl" "$(pin antlr4-python3-runtime)" 2> /dev/null
HYDRA=("$TMP"/dl/hydra_core-*.whl "$TMP"/dl/omegaconf-*.whl "$TMP"/dl/antlr4-python3-runtime-*.tar.gz)

if [ "$WHICH" != whl2 ]; then
  rm -rf .whl && mkdir -p .whl/data
  fetch "$(pin hjson)" "$(pin pydantic)" "$(pin pydantic-core)" "$(pin annotated-types)" "$(pin typing-inspection)"
  # DeepSpeed comes as source only: installed here without its ops (pure Python), which needs torch here
  python3 -m pip download -q --no-deps --no-binary=:all: -d "$TMP/dl" "$(pin deepspeed)" 2> /dev/null
  pack .whl/pywheels.tar.xz "${HYDRA[@]}" "$TMP"/dl/deepspeed-*.tar.gz "$TMP"/dl/hjson-*.whl "$TMP"/dl/pydantic-*.whl \
    "$TMP"/dl/pydantic_core-*.whl "$TMP"/dl/annotated_types-*.whl "$TMP"/dl/typing_inspection-*.whl
  pack .whl/decord-0.6.0.tar.xz "$TMP"/dl/decord-*.whl
  rm -rf "$TMP/files" && mkdir -p "$TMP/files" && (cd "$TMP/files" && unzip -q "$(ls "$SHARED"/causal_conv1d-*.whl | head -1)")
  find "$TMP/files" -name "*.so" -exec strip --strip-debug {} +
  tar cJf .whl/causal_conv1d-1.7.0.tar.xz -C "$TMP/files" .
  cp "$SHARED"/mamba_ssm-*.tar.gz .whl/
  python3 -c "
from pathlib import Path
from vamba.bench.eval_launched import make_long_video
print(make_long_video(Path('.whl/data/v640_40s.mp4'), 40, 640, 360))" > /dev/null
  echo ".whl:  $(du -sh .whl | cut -f1) ($(ls .whl | tr '\n' ' '))"
fi
if [ "$WHICH" != whl ]; then
  rm -rf .whl2 && mkdir -p .whl2
  fetch "$(pin av)"
  pack .whl2/pywheels.tar.xz "${HYDRA[@]}"
  pack .whl2/decord-0.6.0.tar.xz "$TMP"/dl/decord-*.whl
  pack .whl2/av.tar.xz "$TMP"/dl/av-*.whl
  cp "$SHARED"/mamba_ssm-*.tar.gz .whl2/
  echo ".whl2: $(du -sh .whl2 | cut -f1) ($(ls .whl2 | tr '\n' ' '))"
fi
# What a call sends: the tracked files and one of the folders, at most 64 MiB
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
for d in .whl .whl2; do
  [ -d $d ] || continue
  total=$(( tracked + $(du -sb $d | cut -f1) ))
  [ $total -gt $((64 * 1024 * 1024)) ] && echo "WARNING: the repository and $d are $((total / 1048576)) MiB, over a call's 64 MiB"
done
exit 0
