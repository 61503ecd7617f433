"""``vamba eval`` as launched on a GPU: how busy the GPU stays, and the hours of the full LVBench and Video-MME runs
(``scripts/bench_eval_launched.py``; ``scripts/gpu/eval_launched.sh`` on the lent GPU).

1. A benchmark folder in LVBench's official layout (``video_info.meta.jsonl``, ``videos/<key>.mp4``) with hour-long
   30 fps H.264 files of the given sizes (``--videos 640x360:14 1280x720:2``), ``--questions`` each. A file takes
   seconds to make: a short clip is encoded once with PyAV (a keyframe every ``--gop-s`` seconds, at a YouTube-like
   bitrate) and its packets are remuxed (stream copy, timestamps shifted) into an hour; the videos of one size are
   hard links of one file (decoding costs the same; the disk holds one). decord reads each file back and its frame
   count and fps are checked. The folder is reused while its settings (``made.json``) are the same.
2. ``vamba eval benchmark=lvbench`` in this process with the released settings (1024 frames, edges 256/560, greedy)
   on ``--model``: once with ``model.decode_workers`` (the look-ahead) on every video, once decoding in process
   (``decode_workers=0``, the path before) on the first ``--baseline-videos``; their answers on those are compared.
3. The Video-MME estimate: files of the ``--videomme-durations`` (assumed typical of its short, medium and long
   classes) decoded with its protocol (512 frames, edges 256/480) by the same worker pool, no model.

``--fill-only`` makes the folder and measures only ``first_video_wait`` (no model: split among the workers, then
whole) into ``<out>/first_video_wait_<tag>.json``.

``<out>/eval_launched_<gpu>.json``: the device, commit, date, settings, each run's timing (the runner's
``summary.json`` ``timing`` and per-video rows), ``gpu_busy_frac`` (the model's computing seconds, encoding without
the waits for frames plus answering, over the wall time, by the host's clock), ``seconds_per_video``,
``seconds_per_question``, and the projections ``full_lvbench_hours_{1,8}gpu`` and ``videomme_hours_{1,8}gpu``
(formulas in ``projection``): in steady state a video costs max(GPU seconds, decode seconds / workers). A run that
skipped videos fails (exit code 1, ``skipped`` in the JSON with the reasons) after writing the timing of the others.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from vamba.data.video import DecordReader
from vamba.data.vision import VisionConfig, processed_size
from vamba.utils.io import atomic_write_json
from vamba.utils.provenance import header

LVBENCH = {"videos": 103, "questions": 1549}  # the official test set (vamba.evaluation.benchmarks.lvbench)
VIDEOMME = {"videos_per_class": 300, "questions_per_video": 3}  # 900 videos, 2,700 questions
# bits per second of the clips, by frame height (YouTube-like H.264 rates)
BITRATES = {360: 700_000, 480: 1_200_000, 720: 2_500_000, 1080: 4_500_000}


def encode_clip(path: Path, seconds: float, fps: int, width: int, height: int, gop_s: float) -> None:
    """A ``seconds`` H.264 clip with motion and grain everywhere (a flat clip would flatter the decoder), a keyframe
    exactly every ``gop_s`` seconds (closed GOPs, no scene cuts), average bitrate by height (``BITRATES``)."""
    import av

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width + 8 * fps].astype(np.float32)
    pattern = np.stack([128 + 90 * np.sin(xx / 40), 128 + 90 * np.sin(yy / 30 + xx / 90),
                        128 + 90 * np.sin((xx + yy) / 60)], -1)
    keyint = max(1, round(gop_s * fps))
    rate = next((r for h, r in sorted(BITRATES.items()) if height <= h), BITRATES[1080])
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = rate
        stream.options = {"preset": "veryfast", "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0"}
        for n in range(max(1, round(seconds * fps))):
            shift = (3 * n) % (8 * fps)
            frame = pattern[:, shift:shift + width] + rng.normal(0, 6, (height, width, 1))
            frame = np.clip(frame, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def remux_repeated(clip: Path, out: Path, seconds: float) -> int:
    """Write ``out``: ``clip``'s packets again and again (stream copy, timestamps shifted) for at least ``seconds``;
    returns its frame count. The clip's GOPs are closed, so every copy decodes as the first."""
    import av

    tmp = out.with_suffix(".part.mp4")
    with av.open(str(clip)) as src:
        source = src.streams.video[0]
        packets = [(bytes(p), p.pts, p.dts, p.is_keyframe, p.duration) for p in src.demux(source) if p.size]
        span = sum(p[4] for p in packets)  # the clip's duration in its time base
        copies = max(1, math.ceil(seconds / float(span * source.time_base)))
        with av.open(str(tmp), mode="w", format="mp4") as dst:
            stream = dst.add_stream_from_template(source)
            for k in range(copies):
                for data, pts, dts, key, duration in packets:
                    packet = av.Packet(data)
                    packet.pts, packet.dts, packet.duration = pts + k * span, dts + k * span, duration
                    packet.is_keyframe, packet.time_base, packet.stream = key, source.time_base, stream
                    dst.mux(packet)
    tmp.replace(out)
    return copies * len(packets)


def make_long_video(path: Path, seconds: float, width: int, height: int, fps: int = 30, gop_s: float = 4.0,
                    clip_s: float = 8.0) -> dict[str, Any]:
    """An H.264 mp4 of ``seconds`` at ``fps`` (``encode_clip`` + ``remux_repeated``), checked with decord (one
    thread, as the protocol reads): its frame count, fps and size. Returns what was made."""
    started = time.perf_counter()
    try:
        import av  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"making {path} needs PyAV (pip install av), which is missing here") from e
    clip = path.with_name(path.stem + ".clip.mp4")
    encode_clip(clip, min(clip_s, seconds), fps, width, height, gop_s)
    frames = remux_repeated(clip, path, seconds)
    clip.unlink()
    info = DecordReader(path).info()
    if (info.num_frames, round(info.fps, 3), info.width, info.height) != (frames, float(fps), width, height):
        raise RuntimeError(f"{path}: decord reads {info} from a file of {frames} frames {width}x{height} at {fps} fps")
    return {"file": path.name, "width": width, "height": height, "fps": info.fps, "frames": frames,
            "seconds": round(frames / fps, 1), "bytes": path.stat().st_size, "gop_s": gop_s,
            "made_in_s": round(time.perf_counter() - started, 1)}


def build_lvbench(root: Path, sizes: list[tuple[int, int, int]], seconds: float, questions: int, fps: int,
                  gop_s: float, clip_s: float) -> dict[str, Any]:
    """The LVBench folder (module docstring); ``sizes``: (width, height, videos). Reused when ``made.json`` holds the
    same settings."""
    settings = {"sizes": sizes, "seconds": seconds, "questions": questions, "fps": fps, "gop_s": gop_s,
                "clip_s": clip_s, "bitrates": BITRATES}
    made = root / "made.json"
    if made.exists() and json.loads(made.read_text())["settings"] == json.loads(json.dumps(settings)):
        return json.loads(made.read_text())
    shutil.rmtree(root, ignore_errors=True)
    (root / "videos").mkdir(parents=True)
    files, rows = [], []
    for width, height, count in sizes:
        source = root / "sources" / f"{width}x{height}.mp4"
        source.parent.mkdir(exist_ok=True)
        files.append(make_long_video(source, seconds, width, height, fps, gop_s, clip_s))
        for _ in range(count):
            key = f"bench{len(rows):03d}_{width}x{height}"
            os.link(source, root / "videos" / f"{key}.mp4")
            qa = [{"uid": len(rows) * questions + j, "answer": "ABCD"[j % 4], "question_type": ["reasoning"],
                   "time_reference": "", "question": f"What happens in scene {j + 1}?\n(A) A car passes\n"
                                                     "(B) It rains\n(C) A man runs\n(D) Nothing"}
                  for j in range(questions)]
            rows.append({"key": key, "type": "bench", "qa": qa})
    (root / "video_info.meta.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = {"settings": settings, "files": files, "videos": len(rows), "questions": len(rows) * questions}
    atomic_write_json(made, result)
    return result


def run_eval(data: Path, out: Path, model: str, keys: list[str]) -> dict[str, Any]:
    """``vamba eval benchmark=lvbench`` in this process into a fresh ``out``; its summary and rank 0's status."""
    from vamba.evaluation.cli import parse, run

    shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a resumed one
    summary, _ = run(parse(["benchmark=lvbench", f"data={data}", f"model.path={model}", f"out={out}",
                            "progress=false", *keys]))
    status = json.loads((out / "shards" / "rank0.status.json").read_text())
    if not summary:
        raise RuntimeError(f"the run in {out} did not finish")
    # A skipped video is a failed benchmark (main's exit code), but what the run measured is kept: a GPU call that
    # lost some videos still returns the timing of the others.
    return {"summary": summary, "status": status, "skipped": status["skipped"],
            "responses": (out / "responses.jsonl").read_text().splitlines()}


def first_video_wait(data: Path, workers: int, split: bool, num_frames: int | None) -> dict[str, Any]:
    """Seconds from starting ``workers`` fresh decode workers on the LVBench folder's videos (in its order, at most
    workers + 2 ahead, as ``vamba eval`` does) until the first video's frames are ready, without a model: the pipeline
    fill a run's first video waits, with the video ``split`` among the workers or decoded whole by one."""
    from vamba.evaluation.benchmarks import get_benchmark
    from vamba.evaluation.interface import VideoRequest
    from vamba.inference.prefetch import FramePrefetcher

    frames = get_benchmark("lvbench").protocol("vamba").frames
    if num_frames:
        frames = replace(frames, num_frames=num_frames)
    paths = sorted((data / "videos").glob("*.mp4"))
    requests = [VideoRequest(str(p), frames) for p in paths]
    started = time.perf_counter()
    prefetcher = FramePrefetcher(workers, workers + 2, VisionConfig(), 128, split=split)
    try:
        prefetcher.start(requests)
        ready = prefetcher.take(requests[0])
    finally:
        prefetcher.close()
    return {"split": split, "wait_s": round(time.perf_counter() - started, 3), "parts": ready.stats.parts,
            "decode_s": round(ready.stats.decode_s + ready.stats.resize_s, 3), "video": paths[0].name}


def measure_fill(data: Path, workers: int, num_frames: int | None) -> list[dict[str, Any]]:
    """``first_video_wait`` split among the workers, then whole, one after the other (printed as measured)."""
    waits = [first_video_wait(data, workers or 1, split, num_frames) for split in (True, False)]
    print("first video ready after: " + ", ".join(f"{'split' if r['split'] else 'whole'} {r['wait_s']:.1f} s "
                                                   f"({r['parts']} parts)" for r in waits), flush=True)
    return waits


def videomme_files(root: Path, durations: list[float], fps: int, gop_s: float, clip_s: float) -> list[dict[str, Any]]:
    """640x360 files of the ``durations`` (made once: a file of the same settings is reused)."""
    made = []
    for d in durations:
        path = root / f"videomme_{d:g}s_{fps}fps_gop{gop_s:g}s_clip{clip_s:g}s.mp4"
        info = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").exists() else None
        if info is None or not path.exists():
            info = make_long_video(path, d, 640, 360, fps, gop_s, clip_s) | {"duration_s": d}
            atomic_write_json(path.with_suffix(".json"), info)
        made.append(info)
    return made


def videomme_decode(root: Path, durations: list[float], workers: int, fps: int, gop_s: float,
                    clip_s: float) -> list[dict[str, Any]]:
    """Seconds one decode worker takes per Video-MME video (512 frames, edges 256/480) of each duration, decoded by
    ``workers`` processes at once (as in a run); ``workers`` 0: only make the files."""
    from vamba.evaluation.benchmarks import get_benchmark
    from vamba.evaluation.interface import VideoRequest
    from vamba.inference.prefetch import FramePrefetcher

    frames = get_benchmark("videomme").protocol("vamba").frames
    made = videomme_files(root, durations, fps, gop_s, clip_s)
    if not workers:
        return made
    requests = [VideoRequest(str(root / m["file"]), frames) for m in made]
    # one worker per video (split=False): the seconds of a whole video's decode on one core, beside the others
    prefetcher = FramePrefetcher(max(1, min(workers, len(requests))), len(requests), VisionConfig(), 128, split=False)
    try:
        prefetcher.start(requests)
        for m, request in zip(made, requests):
            stats = prefetcher.take(request).stats
            m["decode_s"] = round(stats.decode_s + stats.resize_s, 3)
    finally:
        prefetcher.close()
    return made


def project(prefetch: dict[str, Any], workers: int, videomme: list[dict[str, Any]]) -> dict[str, Any]:
    """Hours of the full runs from the measured per-video seconds (module docstring; formulas in the result)."""
    rows = prefetch["status"]["timing"]["videos"]
    decode = float(np.mean([r.get("decode_s", 0.0) + r.get("resize_s", 0.0) for r in rows]))
    encode = float(np.mean([r["encode_s"] for r in rows]))
    per_question = sum(r["answer_s"] for r in rows) / max(1, sum(r["questions"] for r in rows))
    lv_gpu = encode + per_question * LVBENCH["questions"] / LVBENCH["videos"]
    lv_steady = max(lv_gpu, decode / max(workers, 1))
    # the pipeline's fill: what the run's first video waited for its frames (workers starting, its decode: split
    # among the workers, model.decode_split, or whole)
    fill = float(rows[0].get("wait_s", decode)) if rows else decode
    out: dict[str, Any] = {
        "decode_s_per_video": round(decode, 3), "encode_s_per_video": round(encode, 3),
        "answer_s_per_question": round(per_question, 4), "lvbench_gpu_s_per_video": round(lv_gpu, 3),
        "lvbench_steady_s_per_video": round(lv_steady, 3), "decode_workers": workers, "fill_s": round(fill, 3),
        "formula": "hours = (fill_s + videos_per_gpu * max(gpu_s_per_video, decode_s_per_video / decode_workers)) "
                   "/ 3600; decode_s_per_video sums the CPU seconds of a split video's parts; 8 GPUs: ceil(videos / "
                   "8) per GPU, each GPU with this run's CPU cores",
    }
    out["full_lvbench_hours_1gpu"] = round((fill + LVBENCH["videos"] * lv_steady) / 3600, 3)
    out["full_lvbench_hours_8gpu"] = round((fill + math.ceil(LVBENCH["videos"] / 8) * lv_steady) / 3600, 3)
    if videomme:
        # Encoding scales with the video tokens: 512 frames at edges 256/480 against 1024 at 256/560 (16:9 sources).
        tokens = (512 * math.prod(processed_size(360, 640, VisionConfig(shortest_edge=256, longest_edge=480)))) / (
            1024 * math.prod(processed_size(360, 640, VisionConfig(shortest_edge=256, longest_edge=560))))
        vm_gpu = encode * tokens + per_question * VIDEOMME["questions_per_video"]
        steady = float(np.mean([max(vm_gpu, m["decode_s"] / max(workers, 1)) for m in videomme]))
        first = max(m["decode_s"] for m in videomme)
        videos = 3 * VIDEOMME["videos_per_class"]  # the durations stand for its classes, equally many videos each
        out.update(videomme_gpu_s_per_video=round(vm_gpu, 3), videomme_steady_s_per_video=round(steady, 3),
                   videomme_hours_1gpu=round((first + videos * steady) / 3600, 3),
                   videomme_hours_8gpu=round((first + math.ceil(videos / 8) * steady) / 3600, 3))
    return out


def _size(text: str) -> tuple[int, int, int]:
    """``WIDTHxHEIGHT:VIDEOS`` -> (width, height, videos)."""
    try:
        size, _, count = text.partition(":")
        width, height = (int(v) for v in size.lower().split("x"))
        return width, height, int(count or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT:VIDEOS, got {text!r}") from None


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model", required=True, help="checkpoint directory (model.path)")
    p.add_argument("--out", default="docs/results", help="folder of eval_launched_<gpu>.json")
    p.add_argument("--work", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "vamba-eval-launched"),
                   help="where the benchmark folder (reused) and the run folders go")
    p.add_argument("--videos", type=_size, nargs="+", default=[(640, 360, 14), (1280, 720, 2)],
                   help="WIDTHxHEIGHT:VIDEOS of the LVBench folder")
    p.add_argument("--seconds", type=float, default=3600.0, help="length of every video")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--gop-s", type=float, default=4.0, help="seconds between keyframes")
    p.add_argument("--clip-s", type=float, default=8.0, help="seconds of the clip a video repeats")
    p.add_argument("--questions", type=int, default=15, help="questions per video (LVBench: 1549 / 103 = 15.0)")
    p.add_argument("--decode-workers", type=int, default=None, help="model.decode_workers (default: the auto value)")
    p.add_argument("--decode-ahead", type=int, default=None, help="model.decode_ahead (default: workers + 2)")
    p.add_argument("--baseline-videos", type=int, default=1, help="videos run decoded in process (0: none)")
    p.add_argument("--num-frames", type=int, default=None, help="default: the protocol's 1024")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the protocol's 512")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--videomme-durations", type=float, nargs="*", default=[90.0, 600.0, 2700.0],
                   help="seconds of the Video-MME files decoded for its estimate (none: no estimate)")
    p.add_argument("--no-fill", dest="fill", action="store_false",
                   help="skip the first video's wait measured split and whole (first_video_wait)")
    p.add_argument("--tag", default=None, help="file name tag (default: the device kind, e.g. h100 or cpu)")
    p.add_argument("--build-only", action="store_true", help="make the files (reused by a later call) and stop")
    p.add_argument("--fill-only", action="store_true",
                   help="make the files, measure only first_video_wait (no model) into first_video_wait_<tag>.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from vamba.bench.build import device_tag
    from vamba.inference.chat import resolve_device
    from vamba.inference.video_qa import auto_decode_workers

    args = parse(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    device = resolve_device(args.device)
    name, kind = device_tag(device)
    workers = args.decode_workers if args.decode_workers is not None else auto_decode_workers(device.type)
    work, out_path = Path(args.work), Path(args.out) / f"eval_launched_{args.tag or kind}.json"
    made = build_lvbench(work / "lvbench", args.videos, args.seconds, args.questions, args.fps, args.gop_s,
                         args.clip_s)
    print(f"benchmark folder {work / 'lvbench'}: {made['videos']} videos, {made['questions']} questions "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    if args.build_only:
        videomme_files(work / "videomme", args.videomme_durations, args.fps, args.gop_s, args.clip_s)
        print(f"files made in {time.perf_counter() - started:.0f} s")
        return 0
    keys = [f"model.device={args.device}", f"model.dtype={args.dtype}"]
    keys += [f"num_frames={args.num_frames}"] if args.num_frames else []
    keys += [f"max_new_tokens={args.max_new_tokens}"] if args.max_new_tokens else []
    ahead = [f"model.decode_ahead={args.decode_ahead}"] if args.decode_ahead else []
    result: dict[str, Any] = {
        "benchmark": "eval_launched", **header(device),
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "settings": {**{k: v for k, v in vars(args).items() if k not in ("out", "work")}, "decode_workers": workers,
                     "eval_keys": keys},
        "benchmark_folder": made}

    def save() -> None:
        atomic_write_json(out_path, result)

    if args.fill_only:
        result.update(benchmark="first_video_wait",
                      first_video_wait=measure_fill(work / "lvbench", workers, args.num_frames))
        atomic_write_json(out_path := out_path.with_name(f"first_video_wait_{args.tag or kind}.json"), result)
        print(f"wrote {out_path}")
        return 0
    save()
    ran = run_eval(work / "lvbench", work / "runs" / "prefetch", args.model,
                   keys + [f"model.decode_workers={workers}"] + ahead)
    timing = ran["summary"]["timing"]
    result["runs"] = {"prefetch": {"timing": timing, "videos": ran["status"]["timing"]["videos"]}}
    result.update(gpu_busy_frac=timing["busy_frac"],
                  seconds_per_video=round(timing["wall_s"] / timing["videos_encoded"], 3),
                  seconds_per_question=round(timing["wall_s"] / timing["questions"], 3))
    print(f"decode_workers={workers}: {timing['videos_encoded']} videos in {timing['wall_s']:.0f} s, model busy "
          f"{100 * timing['busy_frac']:.0f} %, waited {timing['wait_s']:.0f} s for frames", flush=True)
    if ran["skipped"]:
        result["skipped"] = ran["skipped"]
        print(f"FAILED: {len(ran['skipped'])} videos skipped (the numbers above are over the others): "
              f"{ran['skipped'][0]['reason']}", flush=True)
    save()
    if ran["skipped"]:
        return 1
    if args.baseline_videos:
        base = run_eval(work / "lvbench", work / "runs" / "in_process", args.model,
                        keys + ["model.decode_workers=0", f"limit={args.baseline_videos * args.questions}"])
        t = base["summary"]["timing"]
        answers = {r["qid"]: r["response"] for r in map(json.loads, ran["responses"])}
        result["runs"]["in_process"] = {"timing": t, "videos": base["status"]["timing"]["videos"]}
        result.update(gpu_busy_frac_in_process=t["busy_frac"],
                      seconds_per_video_in_process=round(t["wall_s"] / t["videos_encoded"], 3),
                      answers_equal=all(answers[r["qid"]] == r["response"] for r in map(json.loads, base["responses"])))
        print(f"decode_workers=0: {t['videos_encoded']} videos in {t['wall_s']:.0f} s, model busy "
              f"{100 * t['busy_frac']:.0f} %; the same answers: {result['answers_equal']}", flush=True)
        save()
    if args.fill:  # the first video's wait, split among the workers and whole, measured one after the other
        result["first_video_wait"] = measure_fill(work / "lvbench", workers, args.num_frames)
        save()
    videomme = (videomme_decode(work / "videomme", args.videomme_durations, workers or 1, args.fps, args.gop_s,
                                args.clip_s) if args.videomme_durations else [])
    result["videomme_decode"] = videomme
    result["projection"] = project(ran, workers, videomme)
    result.update({k: v for k, v in result["projection"].items() if k.endswith(("_1gpu", "_8gpu"))})
    result["seconds"] = round(time.perf_counter() - started, 1)
    save()
    print(json.dumps({k: result.get(k) for k in ("gpu_busy_frac", "gpu_busy_frac_in_process", "seconds_per_video",
                                                 "seconds_per_video_in_process", "full_lvbench_hours_1gpu",
                                                 "full_lvbench_hours_8gpu", "videomme_hours_1gpu",
                                                 "videomme_hours_8gpu", "answers_equal")}))
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
