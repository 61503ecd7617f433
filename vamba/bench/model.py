"""VAMBA with each attention backend vs Qwen2-VL at 2B scale on one CUDA GPU, versus frames; JSON out
(``scripts/bench_model.py``).

Both models at Qwen2-VL-2B sizes with random bf16 weights (``vamba.bench.build``: identical vision tower and LLM;
VAMBA adds cross-attention and Mamba-2 blocks). Qwen2-VL is transformers' own ``Qwen2VLForConditionalGeneration``
with one ``<|video_pad|>`` per merged token (full self-attention over video + text); VAMBA gets the same video with
the text alone in its token stream. Inputs: one sample, ``--text`` text tokens, frames of 224x224 (64 merged
tokens per 2 frames). Measured per frame count (``vamba.utils.timing.measure``: ``--warmup`` warm-up runs, then the
median of ``--reps``; peak memory above what was allocated before: weights, inputs):

- ``train``: one forward+backward step (vision blocks frozen, merger and decoder trained, gradient checkpointing);
- ``prefill``: a no-grad forward that builds the caches for generation.

VAMBA runs with each available attention backend. Out of memory (or any failure) is recorded as such.

    python scripts/bench_model.py --out docs/results/model_bench_h100.json [--frames 64 128 256 512]
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch

from vamba.bench.build import Setup, build, qwen_config, vamba_config
from vamba.utils.io import atomic_write_json
from vamba.utils.provenance import header
from vamba.utils.timing import free, measure

SIZE = 224


def timed(fn: Callable[[], None], warmup: int, reps: int) -> dict:
    """Median ms and peak GiB above what was allocated before; ``oom`` (or ``error``) when it fails."""
    out = measure(fn, torch.device("cuda"), reps=reps, warmup=warmup)
    if out["status"] != "ok":
        return out
    return {"status": "ok", "ms": out["total_ms"], "peak_gib": round(out["peak_above_start_gib"], 2)}


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
    for name, p in model.named_parameters():
        p.requires_grad_(".blocks." not in name and "patch_embed" not in name)  # ViT frozen, merger trained
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def vamba_batch(setup: Setup, frames: int, vocab: int) -> dict:
    pixels, grid = setup.pixels(frames)
    ids = setup.text(setup.train_tokens, vocab)
    return {"input_ids": ids, "labels": ids, "grid_thw": grid, "pixel_values": pixels,
            "visual_row": torch.zeros(1, dtype=torch.long, device=setup.device)}


def qwen_batch(setup: Setup, frames: int, vocab: int, video_pad: int) -> dict:
    pixels, grid = setup.pixels(frames)
    text = setup.text(setup.train_tokens, vocab, avoid=video_pad)
    n_video = setup.video_tokens(frames)
    ids = torch.cat([torch.full((1, n_video), video_pad, device=setup.device), text], dim=1)
    labels = torch.cat([torch.full((1, n_video), -100, device=setup.device), text], dim=1)
    mm = torch.cat([torch.full((1, n_video), 2, device=setup.device), torch.zeros_like(text)], dim=1)
    return {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids), "mm_token_type_ids": mm,
            "pixel_values_videos": pixels, "video_grid_thw": grid}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--frames", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--text", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from transformers import Qwen2VLForConditionalGeneration

    from vamba.models import VambaForConditionalGeneration
    from vamba.models.attention import flash_attn_available, torch_varlen_available

    torch.manual_seed(0)
    device = torch.device("cuda")
    setup = Setup(device, torch.bfloat16, (SIZE // 14, SIZE // 14), 0, args.text, 0)
    backends = ["sdpa"] + (["varlen"] if torch_varlen_available() else []) + (
        ["flash_attention_2"] if flash_attn_available() else [])
    rows = []
    result = {"what": __doc__.splitlines()[0], **header(device), "size": "2b", "text_tokens": args.text,
              "frame_size": SIZE, "rows": rows}

    def record(row: dict) -> None:
        rows.append(row)
        print(row, flush=True)
        atomic_write_json(args.out, result)

    config = vamba_config("2b", "auto")
    model = prepare(build(VambaForConditionalGeneration, config, device, torch.bfloat16))
    vocab = config.text_config.vocab_size
    for frames in args.frames:
        batch = vamba_batch(setup, frames, vocab)
        for backend in backends:
            model.config.attention_backend = backend
            train, prefill = step_fns(model, batch)
            record({"model": "vamba", "attention": backend, "frames": frames,
                    "video_tokens": setup.video_tokens(frames), "train": timed(train, args.warmup, args.reps),
                    "prefill": timed(prefill, args.warmup, args.reps)})
    del model
    free(device)

    qconfig = qwen_config(config)
    qwen = prepare(build(Qwen2VLForConditionalGeneration, qconfig, device, torch.bfloat16))
    for frames in args.frames:
        train, prefill = step_fns(qwen, qwen_batch(setup, frames, vocab, qconfig.video_token_id))
        record({"model": "qwen2_vl", "attention": "sdpa", "frames": frames,
                "video_tokens": setup.video_tokens(frames), "train": timed(train, args.warmup, args.reps),
                "prefill": timed(prefill, args.warmup, args.reps)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
