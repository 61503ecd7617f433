"""Synthetic data: real H.264 mp4 videos and PNG images of coloured shapes, with annotations in every format.

Each video shows coloured shapes (circle, square, triangle) one at a time on a noisy grey background and
carries one task that needs the whole video:

- ``needle``: a shape appears once, briefly; *what colour was it?*
- ``order``: two different shapes appear; *which came first?* (``order_question="shapes"``: the two named
  shapes among four shape options) or *what colour was the shape that appeared first?* (``"colour"``: the
  two shapes differ in colour, the four colours are the options)
- ``count``: a shape flashes 1-4 times among distractors; *how many times did it appear?*
- ``after`` (not in the default ``tasks``): three shapes of three different colours appear one after the other;
  *what colour was the shape that appeared right after the <colour> one?* (the anchor is the first or the
  second event; the four colours are the options). A model that sees the frames as an unordered set knows
  the two candidate colours but not which one follows the anchor: 50% at best.

Events last at least ``num_frames / 8`` frames, so 8 or more uniformly sampled frames always see each one.
``generate(SynthConfig(out=...))`` writes (paths relative to ``out``)::

    videos/*.mp4, images/*.png         training media
    captions.jsonl / captions.parquet  caption pairs (images and videos)
    captions-000000.tar                the same pairs as a webdataset shard
    hf_captions/                       the same pairs as a saved Hugging Face dataset
    llava_video.json, llava_image.json LLaVA conversations (multi-turn: task question, then a caption)
    mixture.yaml                       a mixture over the training files
    lvbench/                           video_info.meta.jsonl (official layout), lvbench_processed.jsonl, videos/
    videomme/                          videomme/test-00000-of-00001.parquet, data/{videoID}.mp4
    tokenizer/                         a tiny tokenizer trained on all the text above
    manifest.json                      config, counts and files (written last: its presence means complete)

Everything is a deterministic function of ``seed`` (same frames, same annotations).
"""
from __future__ import annotations

import dataclasses
import io
import json
import random
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vamba.data.synth_files import finish, prepare, written_files
from vamba.utils.io import atomic_write_json, atomic_write_text
from vamba.utils.logging import get_logger

logger = get_logger(__name__)

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 80, 230), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle")
TASKS = ("needle", "order", "count", "after")  # every task make_video_spec knows
DEFAULT_TASKS = ("needle", "order", "count")  # the tasks a data set cycles through unless SynthConfig.tasks says
ORDER_QUESTIONS = ("shapes", "colour")
LETTERS = "ABCD"
# Benchmark categories for each task, in each benchmark's own vocabulary (vamba.evaluation.benchmarks).
# The first category of each task is its own: a task's accuracy is read from it.
LVBENCH_TYPES = {"needle": ["entity recognition"], "order": ["event understanding", "temporal grounding"],
                 "count": ["key information retrieval"], "after": ["reasoning"]}
VIDEOMME_TASK_TYPES = {"needle": "Attribute Perception", "order": "Temporal Reasoning", "count": "Counting Problem",
                       "after": "Temporal Perception"}
LVBENCH_INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video.\n"
                       "Respond with only the letter (A, B, C, or D) of the correct option.")


@dataclass
class SynthConfig:
    out: str = "synthetic"  # folder to write (created; a rerun replaces only the files synth wrote)
    num_videos: int = 48  # training videos (mp4)
    num_images: int = 48  # training images (png)
    num_bench_videos: int = 24  # videos of the miniature benchmarks (LVBench / Video-MME / MLVU layouts)
    size: int = 64  # frame side in pixels (even, >= 32)
    min_frames: int = 24  # frames per video: drawn between min_frames and max_frames
    max_frames: int = 48
    fps: int = 8  # frame rate written into the videos
    seed: int = 0  # the same seed writes the same files
    tokenizer: bool = True  # also write the tiny word-level tokenizer (vamba.data.tiny_tokenizer)
    # False: a question whose options are a whole closed set (the four colours) lists them in one fixed
    # order, as the counting options 1-4 always are; the letter then names the answer by itself.
    shuffle_options: bool = True
    order_question: str = "shapes"  # "shapes" or "colour" (module docstring)
    tasks: tuple[str, ...] = DEFAULT_TASKS  # videos cycle through these tasks, in this order
    workers: int = 1  # processes encoding videos (the files do not depend on it)
    overwrite: bool = False  # write into a folder that holds files synth did not write (same names replaced)

    def __post_init__(self) -> None:
        if self.size % 2 or self.size < 32:
            raise ValueError(f"size must be even and >= 32 (H.264 4:2:0), got {self.size}")
        if not 8 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 8 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")
        if self.order_question not in ORDER_QUESTIONS:
            raise ValueError(f"order_question must be one of {ORDER_QUESTIONS}, got {self.order_question!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        self.tasks = tuple(self.tasks)
        unknown = [t for t in self.tasks if t not in TASKS]
        if not self.tasks or unknown or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be distinct names among {TASKS}, got {list(self.tasks)}")


@dataclass
class Event:
    shape: str
    colour: str
    start: int  # first frame
    end: int  # one past the last frame

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass
class VideoSpec:
    """A video's content and its task: question, 4 options, answer index, open-ended answer, caption."""

    key: str
    task: str
    num_frames: int
    background: int
    events: list[Event]
    question: str
    options: list[str]
    answer: int
    short_answer: str
    caption: str


def _schedule(rng: random.Random, num_frames: int, n: int) -> list[tuple[int, int]]:
    """``n`` non-overlapping (start, end) spans in order, each at least ``num_frames // 8`` frames long."""
    slot = num_frames // n
    min_len = max(2, num_frames // 8)
    spans = []
    for k in range(n):
        length = rng.randint(min_len, max(min_len, min(slot - 1, 2 * min_len)))
        start = k * slot + rng.randint(0, max(0, slot - length - 1))
        spans.append((start, start + length))
    return spans


def _options(rng: random.Random, correct: str, pool: list[str]) -> tuple[list[str], int]:
    others = [p for p in pool if p != correct]
    rng.shuffle(others)
    options = [correct, *others[:3]]
    rng.shuffle(options)
    return options, options.index(correct)


def make_video_spec(rng: random.Random, key: str, task: str, num_frames: int,
                    shuffle_options: bool = True, order_question: str = "shapes") -> VideoSpec:
    """Draw the events and the question of one video."""
    all_names = [f"{c} {s}" for s in SHAPES for c in COLOURS]
    if task == "needle":
        needle, distractor = rng.sample(SHAPES, 2)
        colour = rng.choice(list(COLOURS))
        spans = _schedule(rng, num_frames, 2)
        events = [Event(needle, colour, *spans[0]), Event(distractor, rng.choice(list(COLOURS)), *spans[1])]
        if rng.random() < 0.5:
            events = [Event(e.shape, e.colour, *s) for e, s in zip(reversed(events), spans)]
        question = f"What colour was the {needle}?"
        options, answer = _options(rng, colour, list(COLOURS))
        if not shuffle_options:
            options, answer = list(COLOURS), list(COLOURS).index(colour)
        short = f"{colour.capitalize()}."
    elif task == "order" and order_question == "colour":
        first, second = rng.sample(SHAPES, 2)
        c1, c2 = rng.sample(list(COLOURS), 2)  # different colours: the colour names which shape came first
        spans = _schedule(rng, num_frames, 2)
        events = [Event(first, c1, *spans[0]), Event(second, c2, *spans[1])]
        question = "What colour was the shape that appeared first?"
        options, answer = _options(rng, c1, list(COLOURS))
        if not shuffle_options:
            options, answer = list(COLOURS), list(COLOURS).index(c1)
        short = f"{c1.capitalize()}."
    elif task == "after":
        shapes, colours = rng.sample(SHAPES, 3), rng.sample(list(COLOURS), 3)
        events = [Event(shape, colour, *span) for shape, colour, span in
                  zip(shapes, colours, _schedule(rng, num_frames, 3))]
        k = rng.randint(0, 1)  # the anchor: the first or the second event
        question = f"What colour was the shape that appeared right after the {colours[k]} one?"
        options, answer = _options(rng, colours[k + 1], list(COLOURS))
        if not shuffle_options:
            options, answer = list(COLOURS), list(COLOURS).index(colours[k + 1])
        short = f"{colours[k + 1].capitalize()}."
    elif task == "order":
        first, second = rng.sample(SHAPES, 2)
        c1, c2 = rng.choice(list(COLOURS)), rng.choice(list(COLOURS))
        spans = _schedule(rng, num_frames, 2)
        events = [Event(first, c1, *spans[0]), Event(second, c2, *spans[1])]
        a, b = sorted([events[0].name, events[1].name], key=lambda _: rng.random())
        question = f"Which appeared first, the {a} or the {b}?"
        pool = [events[1].name] + [n for n in all_names if n not in (events[0].name, events[1].name)]
        others = [pool[0], *rng.sample(pool[1:], 2)]
        options = [f"The {events[0].name}", *[f"The {n}" for n in others]]
        rng.shuffle(options)
        answer = options.index(f"The {events[0].name}")
        short = f"The {events[0].name}."
    elif task == "count":
        target, distractor = rng.sample(SHAPES, 2)
        colour = rng.choice(list(COLOURS))
        count = rng.randint(1, 4)
        n_distract = rng.randint(0, 4 - count) if count < 4 else 0
        kinds = [True] * count + [False] * n_distract
        rng.shuffle(kinds)
        spans = _schedule(rng, num_frames, len(kinds))
        d_colour = rng.choice(list(COLOURS))
        events = [Event(target, colour, *s) if t else Event(distractor, d_colour, *s) for t, s in zip(kinds, spans)]
        question = f"How many times did the {colour} {target} appear?"
        options = ["1", "2", "3", "4"]
        answer = count - 1
        short = f"{count}."
    else:
        raise ValueError(f"unknown task {task!r}")
    caption = "Shapes appear one at a time: " + ", then ".join(f"a {e.name}" for e in events) + "."
    return VideoSpec(key, task, num_frames, rng.randint(50, 110), events, question, options, answer, short, caption)


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if shape == "square":
        return (np.abs(xx - cx) <= r * 0.85) & (np.abs(yy - cy) <= r * 0.85)
    # triangle pointing up: below the two slanted edges, above the base
    return (yy <= cy + r * 0.8) & (yy >= cy - r) & (np.abs(xx - cx) <= (yy - (cy - r)) * 0.6)


def render_video(spec: VideoSpec, size: int, rng: np.random.Generator) -> np.ndarray:
    """``uint8 [T, size, size, 3]`` frames of ``spec``."""
    frames = np.full((spec.num_frames, size, size, 3), spec.background, dtype=np.int16)
    frames += rng.integers(-4, 5, size=frames.shape, dtype=np.int16)
    for e in spec.events:
        r = size * rng.uniform(0.22, 0.3)
        cx, cy = size / 2 + rng.uniform(-0.1, 0.1) * size, size / 2 + rng.uniform(-0.1, 0.1) * size
        frames[e.start:e.end, _shape_mask(e.shape, size, cx, cy, r)] = COLOURS[e.colour]
    return np.clip(frames, 0, 255).astype(np.uint8)


def write_mp4(path: Path | io.BytesIO, frames: np.ndarray, fps: int, faststart: bool = False,
              rotation: int = 0) -> None:
    """H.264 (libx264, yuv420p, near-lossless) mp4 from ``uint8 [T, H, W, 3]`` with PyAV.

    The bytes are a function of the frames alone: one x264 thread, and no macroblock-tree rate control,
    because x264's AVX-512 code made that step depend on memory contents (the same frames gave 2-4
    different files in one process; docs/data.md, "Synthetic data").
    ``faststart`` puts the index (moov) before the frames, as streamed files do. ``rotation`` (degrees
    counter-clockwise) is stored in the stream's display matrix, as phones store portrait video: players show
    the frames turned by it (what ffmpeg's ``-display_rotation`` or the older ``-metadata:s:v:0 rotate=`` writes;
    needs PyAV >= 18)."""
    import av

    options = {"movflags": "faststart"} if faststart else {}
    with av.open(path, mode="w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        stream.options = {"crf": "14", "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}
        stream.codec_context.gop_size = 16
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_video(path: Path, spec: VideoSpec, size: int, fps: int, seed: int) -> None:
    frames = render_video(spec, size, np.random.default_rng(seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    write_mp4(tmp, frames, fps)
    tmp.replace(path)


def _write_videos(jobs: list[tuple[Path, VideoSpec, int]], size: int, fps: int, workers: int) -> None:
    """Encode ``(path, spec, seed)`` jobs, in ``workers`` processes when > 1. Each file is a function of its own
    job (``write_mp4`` is deterministic), so the result does not depend on the process count."""
    import multiprocessing

    if workers <= 1 or multiprocessing.current_process().daemon:  # a Pool worker may not start processes
        for path, spec, seed in jobs:
            _write_video(path, spec, size, fps, seed)
        return
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the caller may hold torch's OpenMP threads, which a forked child can deadlock on
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        paths, specs, seeds = zip(*jobs) if jobs else ((), (), ())
        list(pool.map(_write_video, paths, specs, [size] * len(jobs), [fps] * len(jobs), seeds,
                      chunksize=max(1, len(jobs) // (8 * workers))))


def _image(rng: random.Random, size: int) -> tuple[np.ndarray, str, str, str]:
    shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    frame = render_video(VideoSpec("", "", 1, rng.randint(50, 110), [Event(shape, colour, 0, 1)], "", [], 0, "", ""),
                         size, np.random.default_rng(rng.randint(0, 2**31)))[0]
    return frame, shape, colour, f"A {colour} {shape} on a grey background."


def _time(frame: int, fps: int) -> str:
    seconds = frame // fps
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def _write_webdataset(path: Path, members: list[tuple[str, bytes]]) -> None:
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0  # reproducible shards
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(path)


def generate(config: SynthConfig) -> dict:
    """Write the synthetic data set under ``config.out``; returns the manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    out = Path(config.out)
    # A re-run removes the files of the previous set, and only those; the user's files are never listed, never
    # deleted, and never overwritten without overwrite=true (vamba.data.synth_files). The manifest is absent until
    # the new set is complete.
    before = prepare(out, config.overwrite)
    rng = random.Random(config.seed)
    texts: list[str] = []

    # Training videos and their annotations.
    specs, jobs = [], []
    for i in range(config.num_videos):
        spec = make_video_spec(rng, f"video_{i:05d}", config.tasks[i % len(config.tasks)],
                               rng.randint(config.min_frames, config.max_frames), config.shuffle_options,
                             config.order_question)
        jobs.append((out / "videos" / f"{spec.key}.mp4", spec, rng.randint(0, 2**31)))
        specs.append(spec)
    _write_videos(jobs, config.size, config.fps, config.workers)
    images = []
    for i in range(config.num_images):
        frame, shape, colour, caption = _image(rng, config.size)
        key = f"image_{i:05d}"
        (out / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame).save(out / "images" / f"{key}.png")
        images.append((key, shape, colour, caption))

    captions = [{"video": f"videos/{s.key}.mp4", "caption": s.caption} for s in specs]
    captions += [{"image": f"images/{k}.png", "caption": c} for k, _, _, c in images]
    atomic_write_text(out / "captions.jsonl", "".join(json.dumps(c) + "\n" for c in captions))
    pq.write_table(pa.Table.from_pylist([{"media": c.get("video") or c["image"], "caption": c["caption"]}
                                         for c in captions]), out / "captions.parquet")
    members = []
    for c in captions:
        rel = c.get("video") or c["image"]
        stem = Path(rel).stem
        members += [(f"{stem}{Path(rel).suffix}", (out / rel).read_bytes()),
                    (f"{stem}.txt", c["caption"].encode())]
    _write_webdataset(out / "captions-000000.tar", members)
    _write_hf(out / "hf_captions", captions)

    llava_video = [{"id": s.key, "video": f"videos/{s.key}.mp4", "conversations": [
        {"from": "human", "value": f"<video>\n{s.question}"}, {"from": "gpt", "value": s.short_answer},
        {"from": "human", "value": "Describe the video."}, {"from": "gpt", "value": s.caption}]} for s in specs]
    llava_image = [{"id": k, "image": f"images/{k}.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat shape is shown?"}, {"from": "gpt", "value": f"A {shape}."},
        {"from": "human", "value": "What colour is it?"}, {"from": "gpt", "value": f"{colour.capitalize()}."}]}
        for k, shape, colour, _ in images]
    atomic_write_json(out / "llava_video.json", llava_video)
    atomic_write_json(out / "llava_image.json", llava_image)
    atomic_write_text(out / "mixture.yaml", MIXTURE_YAML.format(seed=config.seed))
    texts += [c["caption"] for c in captions] + [t["value"] for r in llava_video + llava_image
                                                  for t in r["conversations"]]

    # Held-out benchmark videos, in the official LVBench and Video-MME layouts.
    bench = [make_video_spec(rng, f"synth{i:04d}", config.tasks[i % len(config.tasks)],
                             rng.randint(config.min_frames, config.max_frames), config.shuffle_options,
                             config.order_question)
             for i in range(config.num_bench_videos)]
    lv_meta, lv_flat, vmme_rows = [], [], []
    jobs = [(out / "lvbench" / "videos" / f"{spec.key}.mp4", spec, rng.randint(0, 2**31)) for spec in bench]
    _write_videos(jobs, config.size, config.fps, config.workers)
    for i, spec in enumerate(bench):
        video_id = f"{i + 1:03d}"
        (out / "videomme" / "data").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "lvbench" / "videos" / f"{spec.key}.mp4", out / "videomme" / "data" / f"{spec.key}.mp4")
        letter = LETTERS[spec.answer]
        question = spec.question + "".join(f"\n({LETTERS[k]}) {o}" for k, o in enumerate(spec.options))
        span = spec.events[0]
        qa = {"uid": i, "question": question, "answer": letter, "question_type": LVBENCH_TYPES[spec.task],
              "time_reference": f"{_time(span.start, config.fps)}-{_time(span.end, config.fps)}"}
        lv_meta.append({"key": spec.key, "type": "synthetic", "qa": [qa]})
        lv_flat.append({"file_path": f"{spec.key}.mp4", **qa})
        vmme_rows.append({"video_id": video_id, "duration": "short", "domain": "Synthetic", "sub_category": "Shapes",
                          "url": "", "videoID": spec.key, "question_id": f"{video_id}-1",
                          "task_type": VIDEOMME_TASK_TYPES[spec.task], "question": spec.question,
                          "options": [f"{LETTERS[k]}. {o}." for k, o in enumerate(spec.options)], "answer": letter})
        texts += [LVBENCH_INSTRUCTION + "\n" + question, " ".join(vmme_rows[-1]["options"])]
    atomic_write_text(out / "lvbench" / "video_info.meta.jsonl", "".join(json.dumps(r) + "\n" for r in lv_meta))
    atomic_write_text(out / "lvbench" / "lvbench_processed.jsonl", "".join(json.dumps(r) + "\n" for r in lv_flat))
    (out / "videomme" / "videomme").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(vmme_rows), out / "videomme" / "videomme" / "test-00000-of-00001.parquet")

    if config.tokenizer:
        from vamba.data.tiny_tokenizer import build_tiny_tokenizer

        build_tiny_tokenizer(out / "tokenizer", texts)
    manifest = {
        "generator": "vamba.data.synth", "config": dataclasses.asdict(config),
        "counts": {"videos": len(specs), "images": len(images), "captions": len(captions),
                   "bench_videos": len(bench), "bench_questions": len(bench)},
        "tasks": {t: sum(s.task == t for s in specs) for t in config.tasks},
        "files": written_files(out, before),  # name -> size and sha256 of each file this run wrote
    }
    atomic_write_json(out / "manifest.json", manifest)
    finish(out)
    return manifest


def _write_hf(path: Path, captions: list[dict]) -> None:
    try:
        import datasets
    except ImportError:  # an optional format: the GPU image has no `datasets`; everything else still works
        logger.warning("synth: `datasets` is not installed; %s (the HF-dataset copy of the captions) not written", path)
        return
    shutil.rmtree(path, ignore_errors=True)
    # Media paths stay relative to the output folder: an hf source's default media root is its parent folder.
    rows = [{"media": c.get("video") or c["image"], "caption": c["caption"]} for c in captions]
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


MIXTURE_YAML = """\
# Synthetic training mixture written by `vamba data synth` (paths relative to this file).
seed: {seed}
sources:
  - name: synth_captions        # caption pairs: images and videos
    format: caption
    path: captions.jsonl
    weight: 1.0
  - name: synth_video_qa        # LLaVA conversations about the videos (needle / order / count, then a caption)
    format: llava
    path: llava_video.json
    weight: 2.0
  - name: synth_image_qa
    format: llava
    path: llava_image.json
    weight: 1.0
"""
