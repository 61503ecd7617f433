"""Decode throughput: frames/s reading 1024 uniformly sampled frames of a long 640x360 H.264 video
(``scripts/bench_decode.py``).

Compares decord, PyAV and decord's frames read by ``SkippingReader`` (vamba.data.video readers, RGB uint8 out),
with 1 and N worker processes each reading the whole sample of the same video at once (aggregate frames/s = workers
* frames / wall time, the median over ``--repeats`` of ``vamba.utils.timing.measure``). The video is generated
locally (moving shapes over a moving gradient, 30 fps) and cached; ``--video`` names one of yours instead.

    python scripts/bench_decode.py --workers 2   # -> docs/results/decode_throughput.json
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vamba.data.sampling import uniform_indices
from vamba.data.video import DecordReader, PyAVReader, SkippingReader, open_video
from vamba.utils.io import atomic_write_json
from vamba.utils.provenance import header
from vamba.utils.timing import measure


def make_video(path: Path, seconds: int, fps: int = 30, width: int = 640, height: int = 360) -> None:
    """A 640x360 libx264 video with motion everywhere (a flat video would flatter every decoder): a drifting
    colour pattern and a moving disc."""
    import av

    yy, xx = np.mgrid[0:height, 0:width + fps * 8].astype(np.float32)
    pattern = np.stack([128 + 100 * np.sin(xx / 40), 128 + 100 * np.sin(yy / 30 + xx / 90),
                        128 + 100 * np.sin((xx + yy) / 60)], -1).astype(np.uint8)
    ys, xs = np.mgrid[0:height, 0:width]
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}  # x264 defaults otherwise (keyint 250)
        for n in range(seconds * fps):
            t = n / fps
            shift = (3 * n) % (fps * 8)
            frame = pattern[:, shift:shift + width].copy()
            cx, cy = width / 2 + 200 * np.sin(t), height / 2 + 120 * np.cos(1.7 * t)
            frame[(xs - cx) ** 2 + (ys - cy) ** 2 < 40**2] = (250, 30, 30)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


# backend name -> reader; decord runs one thread (as the released evaluation), PyAV with FFmpeg's automatic
# frame/slice threading and with none; skipping: decord's frames through PyAV without the unrequested non-reference
# frames (one thread; its index and its check against decord are in the time).
READERS = {
    "decord": lambda path: DecordReader(path, num_threads=1),
    "skipping": SkippingReader,
    "pyav": lambda path: PyAVReader(path, thread_type="AUTO"),
    "pyav_1thread": lambda path: PyAVReader(path, thread_type="NONE"),
}


def read_once(args: tuple[str, str, list[int]]) -> int:
    path, backend, indices = args
    frames = READERS[backend](path).get_frames(indices)
    return int(frames.shape[0])


def throughput(path: Path, backend: str, indices: list[int], workers: int, repeats: int) -> dict:
    """Median wall time over ``repeats`` of ``workers`` processes each reading ``indices``."""
    ctx = multiprocessing.get_context("spawn")  # no inherited decoder state
    counts: list[int] = []
    with ctx.Pool(workers) as pool:
        pool.map(read_once, [(str(path), backend, indices[:2])] * workers)  # warm-up: imports, page cache

        def read() -> None:
            counts[:] = pool.map(read_once, [(str(path), backend, indices)] * workers)

        out = measure(read, torch.device("cpu"), reps=repeats, warmup=0)
    if out["status"] != "ok":
        raise RuntimeError(f"{backend} with {workers} worker(s) failed: {out.get('error', out['status'])}")
    if any(c != len(indices) for c in counts):
        raise RuntimeError(f"{backend}: read {counts} frames per worker, asked for {len(indices)}")
    wall = out["total_ms"] / 1e3
    return {"backend": backend, "workers": workers, "frames_per_worker": len(indices), "repeats": repeats,
            "median_wall_s": round(wall, 3), "frames_per_s": round(workers * len(indices) / wall, 1),
            "all_wall_s": [round(ms / 1e3, 3) for ms in out["all_ms"]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=None, help="cached video (default: in the temp folder)")
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2, help="N for the multi-worker runs")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=list(READERS), choices=list(READERS))
    parser.add_argument("--out", type=Path, default=Path("docs/results/decode_throughput.json"))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    if args.video is None:
        args.video = Path(tempfile.gettempdir()) / f"vamba_bench_decode_640x360_{args.seconds}s.mp4"
    if not args.video.exists():
        args.video.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        make_video(args.video, args.seconds)
        print(f"wrote {args.video} in {time.perf_counter() - start:.1f} s")
    info = open_video(args.video, "pyav").info()
    indices = uniform_indices(info.num_frames, args.frames)
    load_before = os.getloadavg()
    results = []
    for workers in sorted({1, args.workers}):
        for backend in args.backends:
            r = throughput(args.video, backend, indices, workers, args.repeats)
            print(f"{backend:7s} workers={workers}: {r['frames_per_s']:8.1f} frames/s (median {r['median_wall_s']} s)")
            results.append(r)
    atomic_write_json(args.out, {
        "benchmark": "decode_throughput", **header("cpu"),
        "video": {"num_frames": info.num_frames, "fps": info.fps, "width": info.width, "height": info.height,
                  "codec": "h264 (libx264 veryfast crf 23, keyint 250)", "bytes": args.video.stat().st_size},
        "sampling": {"mode": "uniform", "num_frames": len(indices)},
        "cpu_count": multiprocessing.cpu_count(),
        # NOTE: other processes on the machine skew frames/s; the load average says how busy it was.
        "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "results": results,
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
