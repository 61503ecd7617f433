#!/usr/bin/env bash
# Submit a multi-node run: scripts/launch/slurm.sh NODES GPUS_PER_NODE [vamba train overrides...]
# Extra sbatch options (partition, account, time limit) go in SBATCH_* environment variables, e.g.
#   SBATCH_PARTITION=gpu SBATCH_TIMELIMIT=48:00:00 scripts/launch/slurm.sh 4 8 experiment=paper_sft model.path=...
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: $0 <nodes> <gpus per node> [vamba train overrides...]" >&2
    exit 2
fi
nodes=$1
gpus=$2
shift 2
exec sbatch --nodes "$nodes" --gpus-per-node "$gpus" "$(dirname "$0")/slurm.sbatch" "$@"
