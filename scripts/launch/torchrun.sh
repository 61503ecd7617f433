#!/usr/bin/env bash
# One node, several GPUs (or CPU processes over gloo): data parallel, ZeRO via deepspeed=zero2|zero3.
#   scripts/launch/torchrun.sh 8 experiment=paper_pretrain model.path=/ckpt/Qwen2-VL-7B-Instruct data.mixture=/data/pt.yaml
set -euo pipefail
if [[ $# -lt 1 ]]; then
    echo "usage: $0 <processes per node> [vamba train overrides...]" >&2
    exit 2
fi
procs=$1
shift
exec torchrun --standalone --nproc_per_node "$procs" -m vamba.cli train "$@"
