"""The data side of `vamba train`, measured per worker: each stage of one sample's path, one ``dataset[i]``, and the
DataLoader's throughput at each ``num_workers``.

    python scripts/bench_data.py out=docs/results videos=[/data/v640_120s.mp4] frames=[512,1024] workers=[0,1,2]

The data settings are `vamba train`'s own: the config of ``experiment`` (default ``paper_sft``: 512 frames, uniform
sampling, ``data.max_pixels=200704``, packing under the released row budgets, 8 workers, a batch of 1 per device)
composed by Hydra as the command composes it, with ``data.num_frames`` set to each value of ``frames`` and
``overrides`` applied after. The data set is a video question-answer mixture over ``videos``
(``vamba.bench.train_launched.write_mixture``), built by ``vamba.training.build.build_dataset``, batched by the
training collator (``KeyedCollator(Collator)``).

Per sample, the stages are the calls ``SampleProcessor.__call__`` makes, timed one by one on the same sample:
``record`` (the mixture's record), ``text`` (chat template + tokenizer), ``header`` (only with
``data.max_video_tokens``: the token check from headers), ``decode`` (``read_video``: open, sample the frames, decode
them with the dataset's reader), ``resize`` (``resize_for_patches``: PIL bicubic), ``patchify``
(``patches_from_frames``: uint8 -> float32, rescale, normalise, Qwen2-VL's ``[P, 1176]`` layout; with
``data.pixel_dtype=uint8`` the layout alone, in uint8), ``assemble`` (the
sample's tensors), then ``collate`` (a batch of one row or sample). Their sum (less ``collate``) is compared with one
``dataset[i]`` call on the same sample (the median ratio is ``stage_sum_over_item``). Stage timings run with one torch
thread, as in a DataLoader worker.
``worker_peak_gib``: the memory one ``dataset[i]`` takes above the process's base (Linux: the peak resident size).

A worker delivers ``1 / per_sample_s`` samples a second (``per_sample_s``: ``dataset[i]`` + collate, per sample);
the GPU takes ``per_device_batch_size / step_s``. ``workers_needed = ceil(per_sample_s * batch * margin / step_s)``
per GPU (each rank has its own DataLoader). The DataLoader rows time the real ``torch.utils.data.DataLoader`` with
the Trainer's settings (``pin_memory``, ``prefetch_factor``, ``persistent_workers`` from ``training_arguments``,
``transformers.trainer_utils.seed_worker``) at each ``workers`` value: samples a second over ``loader_samples``
items, worker start-up included. A setting whose estimated memory exceeds ``memory_gib`` is skipped (named so).
Results: ``<out>/data_pipeline_<tag>.json`` (+ ``.md``), rewritten after each frame count.
"""
from __future__ import annotations

import dataclasses
import gc
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vamba.utils.cli_args import parse_args
from vamba.utils.io import atomic_write_json, atomic_write_text
from vamba.utils.provenance import header

GIB = 2**30
STAGES = ("record", "text", "header", "decode", "resize", "patchify", "assemble")  # the sum compared with dataset[i]


@dataclass
class DataPipelineArgs:
    out: str  # folder of the results
    videos: list[str] = field(default_factory=list)  # the mp4 files the samples read (cycled)
    frames: list[int] = field(default_factory=lambda: [512, 1024])  # data.num_frames values measured
    experiment: str | None = "paper_sft"  # the `vamba train` experiment whose data settings are measured (null: none)
    overrides: list[str] = field(default_factory=list)  # more `vamba train` key=value (e.g. data.max_pixels=250000)
    tokenizer: str | None = None  # data.tokenizer (a Qwen2-VL tokenizer folder); null: a tiny local one (no hub)
    samples: int = 3  # samples timed stage by stage (and their items as dataset[i]) per frame count
    workers: list[int] = field(default_factory=lambda: [0, 1, 2])  # DataLoader num_workers values measured
    loader_samples: int = 4  # samples each DataLoader run delivers (at least: whole packed rows)
    step_s: float = 9.0  # the training step the data must keep up with (7B, 1,024 frames, H100: docs/bench.md)
    margin: float = 1.25  # workers_needed covers per_sample_s * margin
    answer_words: int = 100  # words of each sample's answer
    memory_gib: float | None = None  # DataLoader runs estimated above this are skipped (null: 0.8 x available now)
    tag: str | None = None  # results file name tag (default: the device kind, e.g. cpu, h100)


# -- the config and the data set, as `vamba train` builds them -------------------------------------------------------
def train_config(overrides: list[str]):
    """``TrainConfig`` for ``overrides`` as `vamba train` composes it (its schema and YAML groups). The recipes'
    schemas (an experiment such as ``demo`` selects one) are not registered: bench sits below recipes."""
    from hydra import compose, initialize_config_dir

    from vamba.training.cli import CONFIG_DIR
    from vamba.training.config import from_dictconfig, register

    register()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return from_dictconfig(compose(config_name="train", overrides=list(overrides)))


def loader_settings(cfg) -> dict[str, Any]:
    """The DataLoader settings the Trainer uses for ``cfg`` (``vamba.training.run.training_arguments``): the data
    fields do not depend on DeepSpeed or the logging back-ends, which are left out here (they need their packages)."""
    from vamba.training.run import training_arguments

    plain = dataclasses.replace(cfg, deepspeed=None, logging=dataclasses.replace(cfg.logging, report_to=[]))
    args = training_arguments(plain, Path(tempfile.gettempdir()) / "vamba-bench-data")
    return {"num_workers": args.dataloader_num_workers, "pin_memory": args.dataloader_pin_memory,
            "prefetch_factor": args.dataloader_prefetch_factor,
            "persistent_workers": args.dataloader_persistent_workers,
            "multiprocessing_context": args.dataloader_multiprocessing_context,
            "non_blocking": args.accelerator_config.non_blocking, "seed": args.seed}


def _tokenizer_path(args: DataPipelineArgs, work: Path) -> str:
    if args.tokenizer:
        return args.tokenizer
    from vamba.data.tiny_tokenizer import build_tiny_tokenizer

    path = work / "tokenizer"
    if not path.exists():
        build_tiny_tokenizer(path)
    return str(path)


def build_for(cfg, tok):
    """(training dataset, note): ``build_dataset``; with packing, a row budget below one sample's video tokens is
    raised to it (the paper's 120,000 holds 512 frames of 336x588, not 1,024) and the note says so."""
    from vamba.data.dataset import VambaDataset
    from vamba.training.build import build_dataset, data_config, split_mixture

    note = None
    d = cfg.data
    if d.packing:
        lengths = [x for x in VambaDataset(split_mixture(d)[0], tok, data_config(d, None)).measure() if x]
        video = max((v for _, v in lengths), default=0)
        text = max((t for t, _ in lengths), default=0)
        if video > d.video_budget or text > d.text_budget:
            note = (f"a sample has {video} video / {text} text tokens, over the row budgets (data.video_budget="
                    f"{d.video_budget}, data.text_budget={d.text_budget}): measured with budgets raised to fit one")
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(d, video_budget=max(video, d.video_budget),
                                                                    text_budget=max(text, d.text_budget)))
    return build_dataset(cfg, tok), cfg, note


def _inner(dataset):
    """The ``VambaDataset`` inside the training dataset (``PackedDataset``, ``MemoryCache``, ``Subset`` wrap one)."""
    from vamba.data.dataset import VambaDataset

    while not isinstance(dataset, VambaDataset):
        dataset = dataset.dataset
    return dataset


def _items(dataset) -> list[list[int]]:
    """Per item of the training dataset, the sample indices it holds (a packed row: several)."""
    rows = getattr(dataset, "rows", None)
    return rows if rows is not None else [[i] for i in range(len(dataset))]


def _enough(rows: list[list[int]], samples: int) -> int:
    """The first items that hold at least ``samples`` samples (all items if they hold fewer)."""
    held = 0
    for n, row in enumerate(rows, start=1):
        held += len(row)
        if held >= samples:
            return n
    return len(rows)


# -- memory ----------------------------------------------------------------------------------------------------------
def _status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset this process's peak resident size (Linux >= 4.0: ``/proc/self/clear_refs``); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def available_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return None


# -- one sample, stage by stage --------------------------------------------------------------------------------------
def _clock(times: dict[str, float], name: str, fn, *a):
    start = time.perf_counter()
    out = fn(*a)
    times[name] = times.get(name, 0.0) + time.perf_counter() - start
    return out


def time_stages(dataset, collator, index: int, packed: bool) -> tuple[dict[str, float], dict[str, int]]:
    """(seconds per stage, bytes) of sample ``index``, each stage the call ``SampleProcessor.__call__`` makes (for a
    sample held whole: no context parallelism), then the collate of a batch of that one sample (or packed row)."""
    from vamba.data.dataset import ProcessedSample
    from vamba.data.vision import patches_from_frames, patchify, resize_for_patches

    vamba = _inner(dataset)
    processor = vamba.processor
    times: dict[str, float] = {}
    raw = _clock(times, "record", vamba.data.get, index)
    input_ids, labels = _clock(times, "text", processor.encode_text, raw)
    if processor.config.max_video_tokens is not None:
        _clock(times, "header", lambda: processor._check_video_tokens(
            sum(t * per for t, per in processor.media_patches(raw))))
    generator = vamba.generator(index)
    pixel_values, grids = [], []
    sizes = {"decoded_bytes": 0, "resized_bytes": 0, "frames": 0}
    for media in raw.media:
        frames = _clock(times, "decode", processor._frames, media, generator)
        resized = _clock(times, "resize", resize_for_patches, frames, processor.vision_for(media))
        if processor.config.pixel_dtype == "uint8":  # the uint8 layout only: normalised later, on the GPU
            pv, grid = _clock(times, "patchify", lambda r=resized: patchify(torch.from_numpy(r).permute(0, 3, 1, 2)))
        else:
            pv, grid = _clock(times, "patchify", lambda r=resized: patches_from_frames(torch.from_numpy(r)))
        sizes["decoded_bytes"] += frames.nbytes
        sizes["resized_bytes"] += resized.nbytes
        sizes["frames"] += int(frames.shape[0])
        sizes["height"], sizes["width"] = (int(s) for s in resized.shape[1:3])
        pixel_values.append(pv)
        grids.append(grid)
        del frames, resized

    def assemble() -> ProcessedSample:
        return ProcessedSample(raw.key, torch.tensor(input_ids, dtype=torch.long),
                               torch.tensor(labels, dtype=torch.long), torch.cat(pixel_values), torch.cat(grids))

    sample = _clock(times, "assemble", assemble)
    pixel_values.clear()  # the sample holds its own copy (torch.cat), as in the processor
    batch = _clock(times, "collate", collator, [[sample]] if packed else [sample])
    sizes["pixel_bytes"] = sample.pixel_values.nbytes
    sizes["batch_bytes"] = sum(v.nbytes for v in batch.values() if isinstance(v, torch.Tensor))
    sizes["video_tokens"] = sample.num_video_tokens
    sizes["text_tokens"] = sample.num_text_tokens
    return times, sizes


def time_item(dataset, item: int) -> tuple[float, int, float | None]:
    """(seconds of one ``dataset[item]``, samples it holds, its peak memory above the process's base in GiB)."""
    gc.collect()
    base = _status("VmRSS")
    reset = _reset_peak()
    start = time.perf_counter()
    out = dataset[item]
    seconds = time.perf_counter() - start
    peak = _status("VmHWM") if reset else None
    del out
    return seconds, len(_items(dataset)[item]), None if peak is None or base is None else (peak - base) / GIB


def _transfer(batch: dict[str, torch.Tensor], resized_like: tuple[int, ...]) -> dict[str, float]:
    """On CUDA: seconds to pin the batch's pixel_values, copy them to the GPU, and the alternative of sending the
    resized uint8 frames and normalising + patchifying there (``patches_from_frames`` on the GPU)."""
    from vamba.data.vision import patches_from_frames

    out = {}
    pv = batch["pixel_values"]
    start = time.perf_counter()
    pinned = pv.pin_memory()
    out["pin_s"] = time.perf_counter() - start
    torch.cuda.synchronize()
    start = time.perf_counter()
    pinned.to("cuda")
    torch.cuda.synchronize()
    out["h2d_s"] = time.perf_counter() - start
    frames = torch.zeros(resized_like, dtype=torch.uint8).pin_memory()
    for _ in range(2):  # the second one: kernels loaded
        torch.cuda.synchronize()
        start = time.perf_counter()
        patches_from_frames(frames.to("cuda", non_blocking=True))
        torch.cuda.synchronize()
        out["gpu_patchify_s"] = time.perf_counter() - start
    del pinned, frames
    torch.cuda.empty_cache()
    return out


# -- the DataLoader --------------------------------------------------------------------------------------------------
def time_loader(dataset, collator, items: int, batch_size: int, workers: int, settings: dict) -> dict[str, Any]:
    """Samples a second through ``torch.utils.data.DataLoader`` with the Trainer's settings and ``workers``, over
    the first ``items`` items (samples or packed rows) of ``dataset``."""
    from functools import partial

    from transformers.trainer_utils import seed_worker

    subset = torch.utils.data.Subset(dataset, list(range(min(items, len(dataset)))))
    loader = torch.utils.data.DataLoader(
        subset, batch_size=batch_size, collate_fn=collator, num_workers=workers, pin_memory=settings["pin_memory"],
        persistent_workers=settings["persistent_workers"] and workers > 0,
        prefetch_factor=settings["prefetch_factor"] if workers > 0 else None,
        multiprocessing_context=settings["multiprocessing_context"] if workers > 0 else None,
        worker_init_fn=partial(seed_worker, num_workers=workers, rank=0))
    samples, first = 0, None
    start = time.perf_counter()
    for batch in loader:
        samples += len(batch["sample_keys"])
        first = first if first is not None else time.perf_counter() - start
        del batch
    wall = time.perf_counter() - start
    return {"workers": workers, "status": "ok", "samples": samples, "wall_s": _r(wall), "first_batch_s": _r(first),
            "samples_per_s": _r(samples / wall), "per_worker_samples_per_s": _r(samples / wall / max(workers, 1))}


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else float(f"{x:.{digits}g}")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def measure_frames(args: DataPipelineArgs, frames: int, mixture: Path, tokenizer: str, cuda: bool) -> dict[str, Any]:
    """Everything for one ``data.num_frames`` value (module docstring)."""
    from vamba.data.collate import Collator
    from vamba.training.build import load_tokenizer
    from vamba.training.trainer import KeyedCollator

    keys = ([f"experiment={args.experiment}"] if args.experiment else []) + [
        f"data.mixture={mixture}", f"data.tokenizer={tokenizer}", f"data.num_frames={frames}", *args.overrides]
    cfg = train_config(keys)
    tok = load_tokenizer(cfg)
    dataset, cfg, note = build_for(cfg, tok)
    d = cfg.data
    settings = loader_settings(cfg)
    collator = KeyedCollator(Collator(tok.pad_token_id))
    batch = cfg.optim.per_device_batch_size
    row = {"frames": frames, "overrides": keys, "note": note,
           "data": {"num_frames": d.num_frames, "sampling": d.sampling, "min_pixels": d.min_pixels,
                    "max_pixels": d.max_pixels, "packing": d.packing, "text_budget": d.text_budget,
                    "video_budget": d.video_budget, "max_video_tokens": d.max_video_tokens,
                    "pixel_dtype": d.pixel_dtype, "per_device_batch_size": batch},
           "training_loader": settings, "samples": []}
    rows = _items(dataset)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker (torch's worker loop sets one thread)
    try:
        for item in range(_enough(rows, args.samples)):
            per_item: dict[str, float] = {}
            sizes: dict[str, int] = {}
            for index in rows[item]:
                times, sizes = time_stages(dataset, collator, index, d.packing)
                for k, v in times.items():
                    per_item[k] = per_item.get(k, 0.0) + v
            gc.collect()
            item_s, n, peak = time_item(dataset, item)
            row["samples"].append({"item": item, "samples": n, "stages_s": {k: _r(v) for k, v in per_item.items()},
                                   "stage_sum_s": _r(sum(v for k, v in per_item.items() if k in STAGES)),
                                   "item_s": _r(item_s), "worker_peak_gib": _r(peak), **sizes})
    finally:
        torch.set_num_threads(threads)
    done = row["samples"]
    per = [s["samples"] for s in done]
    stages = {k: _r(_median([s["stages_s"][k] / p for s, p in zip(done, per) if k in s["stages_s"]]))
              for k in (*STAGES, "collate") if any(k in s["stages_s"] for s in done)}
    item_s = _median([s["item_s"] / p for s, p in zip(done, per)])
    per_sample = item_s + stages.get("collate", 0.0)
    peaks = [s["worker_peak_gib"] for s in done if s["worker_peak_gib"] is not None]
    last = done[-1]
    row.update({
        "stages_s": stages, "stage_sum_s": _r(sum(v for k, v in stages.items() if k in STAGES)),
        "item_s": _r(item_s), "stage_sum_over_item": _r(_median([s["stage_sum_s"] / s["item_s"] for s in done]), 3),
        "per_sample_s": _r(per_sample), "samples_per_s_per_worker": _r(1 / per_sample),
        "worker_peak_gib": _r(max(peaks)) if peaks else None,
        "bytes": {k: last[k] for k in ("decoded_bytes", "resized_bytes", "pixel_bytes", "batch_bytes")},
        "frame_hw": [last["height"], last["width"]], "video_tokens": last["video_tokens"],
        "text_tokens": last["text_tokens"],
        "gpu_needs_samples_per_s": _r(batch / args.step_s),
        "workers_needed": math.ceil(per_sample * batch * args.margin / args.step_s),
    })
    if cuda:
        sample_batch = collator([dataset[0]])  # a sample, or a packed row
        row["transfer"] = {k: _r(v) for k, v in _transfer(
            sample_batch, (last["frames"] - last["frames"] % 2, last["height"], last["width"], 3)).items()}
        del sample_batch
    row["loader"] = []
    batch_gib = last["batch_bytes"] * batch / GIB
    prefetch = settings["prefetch_factor"] or 2
    for workers in args.workers:
        # Held at once, roughly: each busy worker's peak, the batches in flight (queued and being consumed).
        need = max(workers, 1) * (row["worker_peak_gib"] or 0.0) + (workers * prefetch + 1) * batch_gib
        limit = args.memory_gib if args.memory_gib is not None else 0.8 * (available_gib() or float("inf"))
        if need > limit:
            row["loader"].append({"workers": workers, "status": f"skipped: needs ~{need:.1f} GiB, {limit:.1f} GiB "
                                  "allowed (memory_gib)", "estimated_gib": _r(need, 3)})
            continue
        gc.collect()
        entry = time_loader(dataset, collator, _enough(rows, args.loader_samples), batch, workers, settings)
        row["loader"].append({**entry, "estimated_gib": _r(need, 3)})
    return row


# -- report ----------------------------------------------------------------------------------------------------------
def report(result: dict) -> str:
    torch_version = result["environment"].get("versions", {}).get("torch")
    lines = [f"# The data pipeline per worker ({result['device']}, {result['date']})", "",
             f"Commit {result['code_commit']}; {result['cpu_count']} CPUs; torch {torch_version}; "
             f"video reader: {result['reader']}; videos: {', '.join(result['videos'])}. Experiment "
             f"`{result['experiment']}`; GPU step {result['step_s']} s, margin {result['margin']}. Stage seconds are "
             "medians per sample, one torch thread (a DataLoader worker's).", ""]
    rows = [r for r in result["frames"] if "stages_s" in r]
    if rows:
        stage_names = [k for k in (*STAGES, "collate") if any(k in r["stages_s"] for r in rows)]
        lines += ["| frames | frame | video tokens | " + " | ".join(f"{k} s" for k in stage_names)
                  + " | stage sum s | dataset[i] s | sum / item | per sample s | samples/s per worker "
                  "| pixel_values GiB | worker peak GiB | workers needed |",
                  "|" + "---|" * (len(stage_names) + 12)]
        for r in rows:
            lines.append(
                f"| {r['frames']} | {r['frame_hw'][1]}x{r['frame_hw'][0]} | {r['video_tokens']} | "
                + " | ".join(str(r["stages_s"].get(k, "-")) for k in stage_names)
                + f" | {r['stage_sum_s']} | {r['item_s']} | {r['stage_sum_over_item']} | {r['per_sample_s']} | "
                f"{r['samples_per_s_per_worker']} | {r['bytes']['pixel_bytes'] / GIB:.2f} | {r['worker_peak_gib']} | "
                f"{r['workers_needed']} |")
        lines += ["", "DataLoader (the Trainer's settings: " + ", ".join(
            f"{k}={v}" for k, v in rows[0]["training_loader"].items() if k != "seed") + "; workers as below):", "",
            "| frames | workers | samples | wall s | first batch s | samples/s | per worker | est. GiB | status |",
            "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            for x in r["loader"]:
                lines.append(f"| {r['frames']} | {x['workers']} | {x.get('samples', '-')} | {x.get('wall_s', '-')} | "
                             f"{x.get('first_batch_s', '-')} | {x.get('samples_per_s', '-')} | "
                             f"{x.get('per_worker_samples_per_s', '-')} | {x['estimated_gib']} | {x['status']} |")
        for r in rows:
            if r.get("transfer"):
                lines.append(f"\nTransfer at {r['frames']} frames: " + ", ".join(f"{k} {v}" for k, v in
                                                                                   r["transfer"].items()))
            if r.get("note"):
                lines.append(f"\n{r['frames']} frames: {r['note']}.")
    for r in result["frames"]:
        if "error" in r:
            lines.append(f"\n{r['frames']} frames: {r['error']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(DataPipelineArgs, list(sys.argv[1:] if argv is None else argv), prog="bench_data.py",
                      doc=__doc__ or "")
    from vamba.bench.build import device_tag
    from vamba.bench.train_launched import write_mixture
    from vamba.data.video import decord_available

    if not args.videos or not args.frames or args.samples < 1:
        raise ValueError("videos= must name mp4 files, frames= at least one count, samples= at least 1")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    _, tag = device_tag(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"what": (__doc__ or "").splitlines()[0], **header(device), "cpu_count": os.cpu_count(),
              "reader": "decord" if decord_available() else "pyav", "videos": [Path(v).name for v in args.videos],
              "experiment": args.experiment, "step_s": args.step_s, "margin": args.margin, "frames": []}
    stem = out / f"data_pipeline_{args.tag or tag}"
    with tempfile.TemporaryDirectory(prefix="vamba-bench-data-") as tmp:
        work = Path(tmp)
        items = max(args.samples, args.loader_samples, 2)
        mixture = write_mixture(work / "data", args.videos, samples=items, answer_words=args.answer_words)
        tokenizer = _tokenizer_path(args, work)
        for frames in args.frames:
            started = time.perf_counter()
            try:
                row = measure_frames(args, frames, mixture, tokenizer, cuda)
            except (ValueError, RuntimeError, MemoryError) as e:  # a setting that cannot run: said, the rest goes on
                row = {"frames": frames, "error": f"{type(e).__name__}: {e}"}
            row["wall_s"] = round(time.perf_counter() - started, 1)
            result["frames"].append(row)
            atomic_write_json(f"{stem}.json", result)
            atomic_write_text(f"{stem}.md", report(result))
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
