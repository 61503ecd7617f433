"""One VAMBA stage-1 training step at Qwen2-VL-7B (or 2B) scale on one CUDA GPU: time and peak memory; JSON out.

The model comes from the same builders as ``vamba train`` (``model=vamba_qwen2vl_7b``: random bf16 weights,
gradient checkpointing) and the stage-1 selection (cross-attention, Mamba-2 blocks, alpha; the last layer's
Mamba-2 block frozen, it has no effect). One sample: ``--text`` text tokens (all labelled) and ``--frames``
frames of 224x224 (64 merged video tokens per 2 frames; 256 frames = 8192 video tokens). A step is
forward + backward + AdamW update (the optimizer's parameter groups of the trainer, no weight decay on
A_log / D / dt_bias / norms / biases / alpha). ``--distill`` adds the online teacher: a Qwen2-VL of the
same size (random weights), full self-attention over video + text, and the top-k KL loss.

    python scripts/bench_train.py --size 7b --frames 256 --out docs/results/train_step_h100.json
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vamba.doctor import environment  # noqa: E402
from vamba.training.build import apply_stage  # noqa: E402
from vamba.training.config import StageConfig  # noqa: E402
from vamba.training.params import param_groups  # noqa: E402
from vamba.utils.io import atomic_write_json  # noqa: E402

SIZE = 224


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="7b", choices=["2b", "7b"])
    p.add_argument("--frames", type=int, default=256)
    p.add_argument("--text", type=int, default=512)
    p.add_argument("--steps", type=int, default=4, help="timed steps after one warm-up step")
    p.add_argument("--distill", action="store_true", help="add the online Qwen2-VL teacher and the KL loss")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    from vamba.models import VambaForConditionalGeneration
    from vamba.models.presets import vamba_config_for
    from vamba.training.distill import distillation_loss, supervised_positions

    torch.manual_seed(0)
    device = torch.device("cuda")
    config = vamba_config_for(args.size)
    torch.set_default_dtype(torch.bfloat16)  # build in bf16 directly: a float32 7B would not fit beside it
    with torch.device(device):
        model = VambaForConditionalGeneration(config)
    model.gradient_checkpointing_enable()
    model.train()
    summary = apply_stage(model, StageConfig())  # the stage-1 default: cross-attention, Mamba-2, alpha
    optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-5)

    teacher = None
    if args.distill:
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        qcfg = Qwen2VLConfig(text_config=config.text_config.to_dict(), vision_config=config.vision_config.to_dict())
        with torch.device(device):
            teacher = Qwen2VLForConditionalGeneration(qcfg).eval().requires_grad_(False)
    torch.set_default_dtype(torch.float32)

    grid = torch.tensor([[args.frames // 2, SIZE // 14, SIZE // 14]], device=device)
    video_tokens = int(grid.prod()) // 4
    ids = torch.randint(3, 150000, (1, args.text), device=device)
    batch = {"input_ids": ids, "labels": ids.clone(), "grid_thw": grid,
             "pixel_values": torch.randn(int(grid.prod()), 1176, device=device, dtype=torch.bfloat16)}
    video_pad = 151656

    def step() -> None:
        out = model(**batch)
        loss = out.loss
        if teacher is not None:
            mask = supervised_positions(batch["labels"])
            student = model.lm_head(out.last_hidden_state[mask])
            t_ids = torch.cat([torch.full((1, video_tokens), video_pad, device=device), ids], 1)
            with torch.no_grad():
                hidden = teacher.model(input_ids=t_ids, pixel_values_videos=batch["pixel_values"],
                                       video_grid_thw=grid, mm_token_type_ids=(t_ids == video_pad).int() * 2
                                       ).last_hidden_state
                t_logits = teacher.lm_head(hidden[:, video_tokens:][mask])
            loss = loss + distillation_loss(student, t_logits, top_k=64)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    weights_gib = torch.cuda.memory_allocated() / 2**30
    step()  # warm-up: kernels compile, optimizer states appear
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    result = {
        "benchmark": "stage-1 training step (forward + backward + AdamW)", "size": args.size,
        "frames": args.frames, "frame_size": SIZE, "video_tokens": video_tokens, "text_tokens": args.text,
        "distill": args.distill, "trainable_params": summary.trainable, "total_params": summary.trainable + summary.frozen,
        "step_s_median": round(statistics.median(times), 3), "step_s_all": [round(t, 3) for t in times],
        "weights_gib": round(weights_gib, 2), "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
    }
    atomic_write_json(args.out, result)
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
