"""Benchmark VAMBA against Qwen2-VL at 2B scale on one CUDA GPU, versus the number of video frames; write JSON.

Both models are built at Qwen2-VL-2B sizes with random weights in bf16 (identical vision tower and LLM;
VAMBA adds cross-attention and Mamba-2 blocks). Qwen2-VL is transformers' own
``Qwen2VLForConditionalGeneration`` with one ``<|video_pad|>`` per merged token (full self-attention over
video + text); VAMBA gets the same video with the text alone in its token stream. Inputs: one sample,
``--text`` text tokens, frames of 224x224 (64 merged tokens per 2 frames). Measured, per frame count:

- ``train``: one forward+backward step (vision blocks frozen, merger and decoder trained, gradient
  checkpointing on), median over repeats after warm-up (CUDA events), peak memory;
- ``prefill``: a no-grad forward that builds the caches for generation, median time and peak memory.

VAMBA runs with each available attention backend. Out-of-memory is recorded as such.

    python scripts/bench_model.py --out docs/results/model_bench_h100.json [--frames 64 128 256 512]
"""
from __future__ import annotations

import argparse
import datetime
import gc
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration  # noqa: E402

from vamba.doctor import environment  # noqa: E402
from vamba.models import VambaForConditionalGeneration  # noqa: E402
from vamba.models.attention import flash_attn_available, torch_varlen_available  # noqa: E402
from vamba.models.presets import vamba_config_for  # noqa: E402
from vamba.utils.cuda_timing import median_ms  # noqa: E402
from vamba.utils.io import atomic_write_json  # noqa: E402

SIZE = 224
VIDEO_PAD = 151656


def measure(fn: Callable[[], None], warmup: int, reps: int) -> dict:
    """Median ms and peak GiB above what was allocated before (weights, inputs); 'oom' if it does not fit."""
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    try:
        ms = median_ms(fn, warmup, reps)
    except torch.OutOfMemoryError:
        gc.collect()
        torch.cuda.empty_cache()
        return {"status": "oom"}
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    return {"status": "ok", "ms": round(ms, 2), "peak_gib": round(peak, 2)}


def inputs(frames: int, text: int) -> dict[str, torch.Tensor]:
    grid = torch.tensor([[frames // 2, SIZE // 14, SIZE // 14]], device="cuda")
    ids = torch.randint(3, 150000, (1, text), device="cuda")
    return {"input_ids": ids, "labels": ids, "grid_thw": grid,
            "pixel_values": torch.randn(int(grid.prod()), 1176, device="cuda", dtype=torch.bfloat16)}


def step_fns(model: torch.nn.Module, batch: dict) -> tuple[Callable[[], None], Callable[[], None]]:
    def train() -> None:
        model.train()
        try:
            model(**batch).loss.backward()
        finally:
            model.zero_grad(set_to_none=True)

    def prefill() -> None:
        model.eval()
        with torch.no_grad():
            model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=True, logits_to_keep=1)

    return train, prefill


def prepare(model: torch.nn.Module) -> torch.nn.Module:
    model.to(torch.bfloat16)
    for name, p in model.named_parameters():
        p.requires_grad_(".blocks." not in name and "patch_embed" not in name)  # ViT frozen, merger trained
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def vamba_batch(frames: int, text: int) -> dict:
    b = inputs(frames, text)
    return {**b, "visual_row": torch.zeros(1, dtype=torch.long, device="cuda")}


def qwen_batch(frames: int, text: int) -> dict:
    b = inputs(frames, text)
    n_video = int(b["grid_thw"].prod()) // 4
    ids = torch.cat([torch.full((1, n_video), VIDEO_PAD, device="cuda"), b["input_ids"]], dim=1)
    labels = torch.cat([torch.full((1, n_video), -100, device="cuda"), b["labels"]], dim=1)
    mm = torch.cat([torch.full((1, n_video), 2, device="cuda"), torch.zeros_like(b["input_ids"])], dim=1)
    return {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids), "mm_token_type_ids": mm,
            "pixel_values_videos": b["pixel_values"], "video_grid_thw": b["grid_thw"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--frames", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--text", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    backends = ["sdpa"] + (["varlen"] if torch_varlen_available() else []) + (
        ["flash_attention_2"] if flash_attn_available() else [])
    rows = []
    result = {"what": __doc__.splitlines()[0], "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "environment": environment(), "size": "2b", "text_tokens": args.text, "frame_size": SIZE,
              "rows": rows}

    def save() -> None:
        atomic_write_json(args.out, result)

    config = vamba_config_for("2b")
    with torch.device("cuda"):
        model = prepare(VambaForConditionalGeneration(config))
    for frames in args.frames:
        batch = vamba_batch(frames, args.text)
        for backend in backends:
            model.config.attention_backend = backend
            train, prefill = step_fns(model, batch)
            row = {"model": "vamba", "attention": backend, "frames": frames, "video_tokens": frames // 2 * 64,
                   "train": measure(train, args.warmup, args.reps), "prefill": measure(prefill, args.warmup, args.reps)}
            rows.append(row)
            print(row, flush=True)
            save()
    del model
    gc.collect()
    torch.cuda.empty_cache()

    qconfig = Qwen2VLConfig(text_config=config.text_config.to_dict(), vision_config=config.vision_config.to_dict(),
                            tie_word_embeddings=True)
    qconfig._attn_implementation = "sdpa"
    with torch.device("cuda"):
        qwen = prepare(Qwen2VLForConditionalGeneration(qconfig))
    for frames in args.frames:
        train, prefill = step_fns(qwen, qwen_batch(frames, args.text))
        row = {"model": "qwen2_vl", "attention": "sdpa", "frames": frames, "video_tokens": frames // 2 * 64,
               "train": measure(train, args.warmup, args.reps), "prefill": measure(prefill, args.warmup, args.reps)}
        rows.append(row)
        print(row, flush=True)
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
