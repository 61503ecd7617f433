"""``vamba data <tool>``: ``synth`` writes the synthetic data set; ``stats`` checks a mixture end to end.

    vamba data synth out_dir=data/synthetic num_videos=48 seed=0
    vamba data stats mixture=data/synthetic/mixture.yaml tokenizer=data/synthetic/tokenizer \
        text_budget=2048 video_budget=512
"""
from __future__ import annotations

import json
import sys

USAGE = __doc__


def synth(argv: list[str]) -> int:
    from vamba.data.synth import generate, parse_overrides

    manifest = generate(parse_overrides(argv))
    print(json.dumps({k: manifest[k] for k in ("counts", "tasks")}, indent=2))
    print(f"wrote {len(manifest['files'])} files to {manifest['config']['out_dir']}")
    return 0


def stats(argv: list[str]) -> int:
    """Measure every sample of a mixture (headers only) and print token statistics and skip counts."""
    from dataclasses import dataclass

    from transformers import AutoTokenizer

    from vamba.data.dataset import ProcessingConfig, VambaDataset
    from vamba.data.mixture import Mixture
    from vamba.data.packing import plan_rows
    from vamba.data.sampling import FrameSampling
    from vamba.data.synth import parse_overrides

    @dataclass
    class StatsArgs:
        mixture: str = ""
        tokenizer: str = ""
        num_frames: int = 16
        text_budget: int = 0  # > 0: also plan packed rows under these budgets
        video_budget: int = 0
        confine_media: bool = True  # media paths must stay inside each source's media_root

    args = parse_overrides(argv, StatsArgs)
    if not args.mixture or not args.tokenizer:
        print("vamba data stats: mixture=... and tokenizer=... are required", file=sys.stderr)
        return 2
    dataset = VambaDataset(Mixture.from_yaml(args.mixture, args.confine_media),
                           AutoTokenizer.from_pretrained(args.tokenizer),
                           ProcessingConfig(sampling=FrameSampling("uniform", args.num_frames)))
    measured = dataset.measure()
    lengths = [x for x in measured if x is not None]
    text = [t for t, _ in lengths]
    video = [v for _, v in lengths]
    out = {"samples": len(dataset), "ok": len(lengths), "skipped": dataset.skips.summary(),
           "text_tokens": {"mean": sum(text) / max(1, len(text)), "max": max(text, default=0)},
           "video_tokens": {"mean": sum(video) / max(1, len(video)), "max": max(video, default=0)}}
    if args.text_budget > 0:
        plan = plan_rows(measured, args.text_budget, args.video_budget, seed=dataset.config.seed)
        out["packing"] = {"rows": len(plan.rows), "unpackable": len(plan.unpackable),
                          "fill": plan.fill(args.text_budget, max(1, args.video_budget))}
    print(json.dumps(out, indent=2))
    return 0


TOOLS = {"synth": synth, "stats": stats}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in TOOLS:
        print(USAGE, file=sys.stderr if argv else sys.stdout)
        return 2 if argv else 0
    try:
        return TOOLS[argv[0]](argv[1:])
    except (ValueError, FileNotFoundError) as e:
        print(f"vamba data {argv[0]}: {e}", file=sys.stderr)
        return 2
