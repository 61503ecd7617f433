#!/bin/bash
# One call on the lent GPU machine for distributed training. Everything worth keeping goes to $OUT.
# (One VAMBA stage-1 step at 7B scale on one GPU is the efficiency benchmark's stage-1 point: scripts/gpu/efficiency.sh.)
#   2 GPUs (2xH200):       `vamba train` under torchrun with ZeRO-2 and ZeRO-3 on the 2B config, mixed batches
#                          (videos, images and text-only samples), stopped after 3 steps with a checkpoint and
#                          resumed to 6: step time and peak memory per GPU from the run's log.jsonl.
#                          ZERO_NPROC=1 runs the same on one GPU (2 micro-batches of 2 per step instead of 2 ranks).
#   DATA=dir               use synthetic data made beforehand (the same `vamba data synth` call below; a machine
#                          without PyAV cannot write mp4), else it is generated here.
# Run from the project root (kernel wheels as for scripts/gpu/model.sh; deepspeed must be importable):
#   bash .whl/install.sh && export PYTHONPATH=/tmp/site:$PWD && bash scripts/gpu/zero_training.sh
set -u
OUT=${OUT:-/tmp/vamba-out}
RUNS=${RUNS:-/tmp/vamba-runs}   # checkpoints stay here (GBs); only logs go to $OUT
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia_smi.txt" 2>&1
NGPU=$(nvidia-smi -L | wc -l)

# Two GPUs (or ZERO_NPROC), ZeRO-2 / ZeRO-3, 2B scale, mixed batches, save + resume
NPROC=${ZERO_NPROC:-$NGPU}
if [ "$NPROC" -ge 2 ] || [ -n "${ZERO_NPROC:-}" ]; then
  D=${DATA:-$RUNS/data}
  [ -n "${DATA:-}" ] || python3 -m vamba.cli data synth out="$D" num_videos=12 num_images=12 num_bench_videos=0 size=224 \
    min_frames=32 max_frames=48 > "$OUT/synth.log" 2>&1
  python3 - "$D" <<'PY'
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
text = [{"id": f"text_{i}", "conversations": [{"from": "human", "value": f"Count from {i} to {i + 3}."},
                                               {"from": "gpt", "value": " ".join(str(i + k) for k in range(4))}]}
        for i in range(12)]
(d / "text_only.json").write_text(json.dumps(text))
(d / "mixed.yaml").write_text("seed: 0\nsources:\n"
                              "  - {name: video_qa, format: llava, path: llava_video.json}\n"
                              "  - {name: image_qa, format: llava, path: llava_image.json}\n"
                              "  - {name: text_only, format: llava, path: text_only.json}\n")
PY
  echo "ZeRO runs on $NPROC GPU(s), data in $D"
  # a stalled step prints every rank's Python stacks (debug.stall_dump_s); NCCL reports its own warnings
  export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
  PART_S=${PART_S:-250}  # ZeRO-2 builds the 2.8B random model on the CPU first (~110 s on the H200 machine)
  for z in ${ZERO_STAGES:-zero3 zero2}; do
    rm -rf "$RUNS/$z"
    common=(model=vamba_qwen2vl_2b model.allow_random_init=true deepspeed=$z "data.mixture=$D/mixed.yaml" "data.tokenizer=$D/tokenizer"
            data.num_frames=32 optim.per_device_batch_size=2 optim.global_batch_size=4 optim.max_steps=6
            logging.save_steps=3 logging.logging_steps=1 optim.lr=1e-5 optim.bf16=true "output_dir=$RUNS/$z"
            logging=none logging.progress=false debug.stall_dump_s=${STALL_S:-40})
    timeout "$PART_S" torchrun --standalone --nproc_per_node "$NPROC" -m vamba.cli train "${common[@]}" debug.stop_after_steps=3 \
      > "$OUT/$z.part1.log" 2>&1; echo "$z part 1 rc=$?"
    timeout "$PART_S" torchrun --standalone --nproc_per_node "$NPROC" -m vamba.cli train "${common[@]}" \
      > "$OUT/$z.part2.log" 2>&1; echo "$z part 2 (resumed) rc=$?"
    mkdir -p "$OUT/$z"
    cp "$RUNS/$z"/{log.jsonl,run_info.json,config.yaml} "$OUT/$z/" 2>/dev/null
    ls "$RUNS/$z" > "$OUT/$z/listing.txt" 2>&1
  done
  python3 - "$OUT" "$NPROC" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
summary = {}
for z in ("zero2", "zero3"):
    path = out / z / "log.jsonl"
    if not path.exists():
        summary[z] = {"status": "no log"}
        continue
    steps = [json.loads(line) for line in path.read_text().splitlines() if '"loss"' in line]
    peaks = {k: max(s[k] for s in steps if k in s) for s in steps for k in s if k.startswith("gpu_peak_gib")}
    summary[z] = {"steps": [s["step"] for s in steps], "loss": [round(s["loss"], 4) for s in steps],
                  "step_s_median_after_first": statistics.median([s["step_s"] for s in steps[1:]]) if len(steps) > 1 else None,
                  "gpu_peak_gib": peaks, "resumed": (out / f"{z}.part2.log").exists()}
(out / f"train_zero_{sys.argv[2]}gpu.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
PY
fi
