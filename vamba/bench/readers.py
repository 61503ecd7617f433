"""decord (one thread, as the released evaluation) against ``SkippingReader`` on the same reads: seconds and whether
every frame is equal. The reads are the evaluation's: ``--frames`` uniform indices of each file, read in pieces of
``--piece`` frames in time order, as ``vamba eval``'s decode workers read them (vamba.inference.video.VideoPlan).
Each reader runs alone in this process, one after the other, so the seconds are one core's.

    python scripts/bench_readers.py /data/lvbench/*.mp4 --tag cpu   # -> docs/results/readers_cpu.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vamba.data.sampling import uniform_indices
from vamba.data.video import DecordReader, SkippingReader
from vamba.utils.io import atomic_write_json
from vamba.utils.provenance import header


def time_reads(reader: Any, pieces: list[list[int]]) -> tuple[float, list[np.ndarray]]:
    started = time.perf_counter()
    frames = [reader.get_frames(p) for p in pieces]
    return time.perf_counter() - started, frames


def compare(path: Path, frames: int, piece: int) -> dict[str, Any]:
    """One file: decord's read, then the skipping reader's (opened in the timed span: its index is part of it)."""
    decord = DecordReader(path)
    info = decord.info()
    indices = uniform_indices(info.num_frames, frames)
    pieces = [indices[i:i + piece] for i in range(0, len(indices), piece)]
    decord_s, want = time_reads(decord, pieces)
    started = time.perf_counter()
    skipping = SkippingReader(path)
    open_s = time.perf_counter() - started
    skipping_s, got = time_reads(skipping, pieces)
    equal = all(np.array_equal(a, b) for a, b in zip(want, got))
    return {"file": path.name, "width": info.width, "height": info.height, "fps": info.fps,
            "num_frames": info.num_frames, "frames_read": len(indices), "piece": piece,
            "decord_s": round(decord_s, 2), "skipping_s": round(open_s + skipping_s, 2),
            "skipping_open_s": round(open_s, 2), "speedup": round(decord_s / (open_s + skipping_s), 2),
            "skipping_fast": skipping.fast, "skipping_why": skipping.why, "frames_equal": equal}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--frames", type=int, default=1024, help="uniform indices per file (LVBench's protocol: 1024)")
    p.add_argument("--piece", type=int, default=128, help="frames per read")
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    p.add_argument("--tag", default="cpu")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    import torch

    result: dict[str, Any] = {"benchmark": "readers", **header(torch.device("cpu")), "files": []}
    out = args.out / f"readers_{args.tag}.json"
    for path in args.files:
        row = compare(path, args.frames, args.piece)
        print(row, flush=True)
        result["files"].append(row)
        atomic_write_json(out, result)  # a run cut short keeps the files it finished
    print(f"wrote {out}")
    return 0 if all(r["frames_equal"] for r in result["files"]) else 1


if __name__ == "__main__":
    sys.exit(main())
