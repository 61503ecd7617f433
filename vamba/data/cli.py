"""``vamba data <tool>``: ``synth`` writes the synthetic data set; ``stats`` checks a mixture end to end.

    vamba data synth out=data/synthetic num_videos=48 seed=0
    vamba data stats mixture=data/synthetic/mixture.yaml tokenizer=data/synthetic/tokenizer text_budget=2048

``vamba data <tool> --help`` lists the tool's keys.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from vamba.utils.cli_args import parse_args, wants_help

USAGE = __doc__


def parse_synth(argv: list[str]):
    from vamba.data.synth import SynthConfig

    return parse_args(SynthConfig, argv, prog="vamba data synth", doc="write the synthetic data set (docs/data.md)",
                      deprecated={"out_dir": "out", "output_dir": "out"})


def synth(argv: list[str]) -> int:
    from vamba.data.synth import generate

    config = parse_synth(argv)
    manifest = generate(config)
    print(json.dumps({k: manifest[k] for k in ("counts", "tasks")}, indent=2))
    print(f"wrote {len(manifest['files'])} files to {config.out}")
    return 0


@dataclass
class StatsArgs:
    mixture: str  # the mixture YAML (vamba.data.mixture)
    tokenizer: str  # tokenizer folder (a checkpoint, or the synthetic set's tokenizer/)
    num_frames: int = 16  # frames sampled per video (uniformly)
    text_budget: int = 0  # > 0: also plan packed rows under these budgets (text tokens per row)
    video_budget: int = 0  # video tokens per packed row
    confine_media: bool = True  # media paths must stay inside each source's media_root


STATS_DOC = "Measure every sample of a mixture (headers only) and print token statistics and skip counts."


def parse_stats(argv: list[str]) -> StatsArgs:
    return parse_args(StatsArgs, argv, prog="vamba data stats", doc=STATS_DOC, deprecated={"frames": "num_frames"})


def stats(argv: list[str]) -> int:
    """``vamba data stats``: see ``STATS_DOC``."""
    args = parse_stats(argv)
    from transformers import AutoTokenizer

    from vamba.data.dataset import ProcessingConfig, VambaDataset
    from vamba.data.mixture import Mixture
    from vamba.data.packing import plan_rows
    from vamba.data.sampling import FrameSampling

    dataset = VambaDataset(Mixture.from_yaml(args.mixture, confine_media=args.confine_media),
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
    if not argv or (wants_help(argv[:1])):
        print(USAGE)
        return 0
    if argv[0] not in TOOLS:
        print(f"vamba data: unknown tool {argv[0]!r} (synth or stats)\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return TOOLS[argv[0]](argv[1:])
    except (ValueError, FileNotFoundError) as e:  # ArgsError is a ValueError: one line, exit 2
        print(f"vamba data {argv[0]}: {e}", file=sys.stderr)
        return 2
