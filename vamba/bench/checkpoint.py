"""A VAMBA checkpoint with random weights at a released size, written as a user's checkpoint is.

    python scripts/random_checkpoint.py size=7b out=/tmp/vamba-7b-random device=cuda
    python scripts/random_checkpoint.py size=7b kind=qwen2vl out=/tmp/qwen2vl-7b-random  # a distillation teacher

Speed and memory do not depend on the weights' values, so the training and evaluation measurements of the launched
commands (``vamba train model.path=...``, ``vamba eval model.path=...``) start from this instead of the released
checkpoint, which a machine without the model hub cannot fetch. The weights are drawn on ``device`` in ``dtype``
(``vamba.bench.build.build``: a 7B model in seconds on a GPU, never a float32 copy on the host) and saved with
``save_pretrained`` (safetensors shards), beside the word-level tokenizer of ``vamba.data.tiny_tokenizer`` (its ids
are a subset of the model's vocabulary) and ``random_checkpoint.json``: the size, seconds to build and to save, and
the provenance header of every benchmark result.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vamba.bench.build import DTYPES, build, qwen_config, vamba_config
from vamba.inference.chat import RANDOM_CHECKPOINT
from vamba.utils.cli_args import parse_args
from vamba.utils.provenance import header

SIZES = ("7b", "2b", "tiny")
KINDS = ("vamba", "qwen2vl")


@dataclass
class CheckpointArgs:
    out: str  # the checkpoint directory to write (must not exist, or be empty)
    size: str = "7b"  # 7b | 2b | tiny (the benchmarks' sizes; vamba.models.presets)
    # vamba | qwen2vl: transformers' Qwen2-VL at the same text and vision sizes (stage.distill.teacher=)
    kind: str = "vamba"
    device: str = "auto"  # where the weights are drawn: auto (cuda when present) | cpu | cuda
    dtype: str = "bfloat16"  # bfloat16 | float32 | float16
    seed: int = 0
    mamba_backend: str = "auto"  # the Mamba-2 blocks' kernels recorded in the config (auto | triton | torch)


def write_random_checkpoint(args: CheckpointArgs) -> dict:
    """Build, save and describe the checkpoint; returns what ``random_checkpoint.json`` holds."""
    from vamba.data.tiny_tokenizer import build_tiny_tokenizer
    from vamba.models import VambaForConditionalGeneration

    if args.size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {args.size!r}")
    if args.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {args.kind!r}")
    if args.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {args.dtype!r}")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: give a new directory")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    tokenizer = build_tiny_tokenizer(corpus=["a random checkpoint for measuring speed"])
    config = vamba_config(args.size, args.mamba_backend)
    if args.kind == "qwen2vl":
        from transformers import Qwen2VLForConditionalGeneration

        from vamba.models.presets import special_token_ids

        teacher = qwen_config(config)
        # Qwen2-VL finds the vision placeholders by these ids: the tokenizer saved beside it must agree
        for key, value in special_token_ids(tokenizer).items():
            setattr(teacher, key, value)
        model = build(Qwen2VLForConditionalGeneration, teacher, device, DTYPES[args.dtype])
    else:
        model = build(VambaForConditionalGeneration, config, device, DTYPES[args.dtype])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    built = time.perf_counter()
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp, max_shard_size="5GB")
    if len(tokenizer) > model.config.get_text_config().vocab_size:
        raise ValueError(f"the tokenizer ({len(tokenizer)} ids) does not fit the {args.size} vocabulary")
    tokenizer.save_pretrained(tmp)
    info = {"what": "random weights (speed and memory only)", **header(device), "kind": args.kind, "size": args.size,
            "dtype": args.dtype, "parameters": sum(p.numel() for p in model.parameters()),
            "build_s": round(built - started, 2), "save_s": round(time.perf_counter() - built, 2)}
    (tmp / RANDOM_CHECKPOINT).write_text(json.dumps(info, indent=2))  # vamba eval / chat warn when they see it
    if out.exists():
        out.rmdir()
    tmp.rename(out)  # complete or absent
    return info


def main(argv: list[str]) -> int:
    args = parse_args(CheckpointArgs, argv, prog="random_checkpoint.py")
    info = write_random_checkpoint(args)
    print(f"{args.out}: {info['parameters']:,} parameters, built in {info['build_s']} s on "
          f"{info['device']}, saved in {info['save_s']} s")
    return 0
