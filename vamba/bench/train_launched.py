"""`vamba train` measured as researchers launch it: real mp4 files decoded by the Dataset in DataLoader workers, the
optimizer, the DeepSpeed engine, a checkpoint loaded from disk; beside the benchmark's step at the same shape.

    python scripts/bench_train_launched.py out=$OUT checkpoint=/tmp/vamba-7b videos=[/data/a.mp4] tag=h200

Each run (``RUNS``) is one ``vamba train`` process (under ``torchrun --nproc_per_node 1``, as DeepSpeed runs) for
``steps`` optimizer steps of one sample or packed row: video question-answer samples over ``videos`` (``frames``
frames each, the answer ``answer_words`` words long), packed image-caption rows, or both kinds of sample mixed. From
its ``log.jsonl`` (``vamba.training.trainer``'s step metrics) the run's row takes the median over the steps after
the first two (autotuning, allocator warm-up) of ``step_s``, ``data_wait_frac``, ``tokens_per_s``, ``mfu`` and
``model_tflops``, the first step's ``startup_s`` and the largest ``gpu_peak_gib``. ``bench_step_s`` is the
efficiency benchmark's step of the same kind at the same frames (``vamba bench points=vamba:<mode>:<frames>``, its
own process) plus one optimizer step over the same number of trainable parameters (fused AdamW on float32 master
weights, as DeepSpeed's bf16 optimizer keeps them), measured here: on the GPU, or on the host's CPUs where the run
offloads the optimizer, and then with the copies the offload adds to every step (the bf16 gradients to pinned host
memory and the bf16 weights back, ``offload_copy_s``). Results: ``<out>/train_launched_<tag>.json`` (+ ``.md``), rewritten after every run.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from vamba.data.host_memory import GIB, host_memory_bytes, loader_host_bytes, sample_pixel_bytes
from vamba.utils.cli_args import parse_args
from vamba.utils.provenance import header


@dataclass(frozen=True)
class RunSpec:
    """One launched run: ``stage`` (pretrain: cross-attention, Mamba-2 blocks and alpha train; sft: merger + LLM),
    the DeepSpeed group, the benchmark's step of the same shape (None: the benchmark has none), the data (``video``:
    question-answer samples over the videos; ``packed``: packed image-caption rows over real JPEG and PNG files of
    mixed sizes, the released stage 1; ``mixed``: image and video samples in one mixture, the released stage 2), the
    model size, LoRA, and whether the optimizer states may go to the host (``offload``: only where they are large)."""

    stage: str
    zero: str
    bench_mode: str | None
    data: str = "video"
    size: str = "7b"
    lora: bool = False
    offload: bool = True
    distill: bool = False  # lambda = 1 with the online teacher (``teacher``: a Qwen2-VL checkpoint)
    # a fresh machine's start: empty Triton and Inductor caches holding only the autotuning choices the earlier runs
    # saved (what a shipped file of vamba/ops/autotune_choices/ gives a new machine: the same restore)
    fresh: bool = False


RUNS = {"like_for_like": RunSpec("pretrain", "zero2", "stage1"),
        # the same run once more: its startup with the Inductor and Triton caches the first launch filled (a
        # researcher's relaunch on the same node)
        "like_for_like_again": RunSpec("pretrain", "zero2", "stage1"),
        "like_for_like_zero3": RunSpec("pretrain", "zero3", "stage1"),
        "sft_whole_llm": RunSpec("sft", "zero2", "train"),
        "stage1_packed": RunSpec("pretrain", "zero2", None, data="packed"),
        # its relaunch: the start with warm caches and the kept autotuning choices (vamba.ops.autotune), whose
        # `autotune` should show no Mamba-2 tuning left
        "stage1_packed_again": RunSpec("pretrain", "zero2", None, data="packed"),
        # its start on a fresh machine given the choices: everything compiles again, nothing is tuned
        "stage1_packed_fresh": RunSpec("pretrain", "zero2", None, data="packed", fresh=True),
        # lambda > 0 with the online teacher: a packed row's activations leave room for Qwen2-VL-7B (16.6 GB in
        # bf16) beside the student on one GPU, and a cache would cost the same teacher forward in a pass of its own
        "stage1_packed_distill": RunSpec("pretrain", "zero2", None, data="packed", distill=True),
        # stage 2 at the largest size whose AdamW states fit one GPU beside it: the 2B config whole
        "sft_mixed_2b": RunSpec("sft", "zero2", None, data="mixed", size="2b", offload=False),
        # stage 2 at 7B with LoRA adapters (stage.lora), as the released scripts allow
        "sft_mixed_lora_7b": RunSpec("sft", "zero2", None, data="mixed", lora=True, offload=False)}
FILES = 48  # distinct image files the image-caption records cycle over
# (width, height) of those files, cycled, each size as JPEG and as PNG: web-image sizes, portrait and landscape
IMAGE_SIZES = [(640, 480), (1024, 768), (1280, 720), (500, 375), (800, 1200), (1920, 1080), (512, 512), (375, 500)]


@dataclass
class LaunchedArgs:
    out: str  # folder of the results and the runs' directories
    checkpoint: str  # the VAMBA checkpoint every run loads (model.path=; scripts/random_checkpoint.py makes one)
    videos: list[str] = field(default_factory=list)  # the mp4 files the samples read (cycled)
    tag: str | None = None  # results file name tag (default: the device kind, e.g. h100)
    model: str = "vamba_qwen2vl_7b"  # the configs/model option matching the checkpoint's size
    checkpoint_2b: str | None = None  # the 2B checkpoint of the runs whose size is 2b (sft_mixed_2b)
    model_2b: str = "vamba_qwen2vl_2b"  # its configs/model option
    teacher: str | None = None  # the Qwen2-VL checkpoint of the distilling runs (random_checkpoint.py kind=qwen2vl)
    frames: int = 1024  # frames per sample
    max_pixels: int = 250_000  # data.max_pixels (640x360 -> 644x364, as the benchmark's frames)
    answer_words: int = 100  # words of each sample's answer (the text that trains)
    steps: int = 6  # optimizer steps per run
    workers: int | None = None  # data.num_workers (None: what the host's memory holds: auto_workers)
    pixel_dtype: str = "uint8"  # data.pixel_dtype (uint8: the paper configs' setting, docs/data.md)
    runs: list[str] = field(default_factory=lambda: ["like_for_like", "like_for_like_zero3"])
    # stage1_packed: the released stage 1's pixel cap (768 x 28 x 28 per image) and row budgets (120,000 encoder
    # patches, --max_img_seq_len, are ~30,000 merged video tokens; configs/data/image_captions.yaml's text budget)
    packed_max_pixels: int = 602_112
    packed_video_budget: int = 30_000
    packed_text_budget: int = 16_384
    image_scale: float = 1.0  # the images' sizes times this (CPU tests: small images)
    offload: str = "auto"  # the optimizer states in host memory: auto (when the GPU has < 100 GiB) | true | false
    bench: bool = True  # also measure the benchmark's step and an optimizer step (CUDA)
    bench_extra: list[str] = field(default_factory=list)  # more benchmark points in the same process (MODEL:MODE:FRAMES)
    budget_s: float = 480.0  # wall-clock budget for everything
    min_run_s: float = 60.0  # a run is skipped when less of the budget is left (a 7B run needs ~200 s)
    overrides: list[str] = field(default_factory=list)  # more `vamba train` key=value for every run (CPU tests)
    # optimizer steps each run records with torch.profiler (debug.profile_steps): its operator tables are copied to
    # <out>/profile_<run>_step<N>.txt (the traces stay in the run's folder: tens of MB at 7B)
    profile_steps: list[int] = field(default_factory=list)


def auto_workers(frames: int, max_pixels: int, offload_gib: float, cpus: int, host_bytes: int | None,
                 pixel_dtype: str = "float32") -> int:
    """DataLoader workers for one rank: as many as 80 % of the host's memory holds beside the offloaded optimizer
    states and ~16 GiB for the process itself (vamba.data.host_memory's estimate per worker), at most ``cpus - 4``.
    On 2026-12-07 twelve workers at 1,024 frames on a 125 GiB host were killed for memory (docs/results)."""
    sample = sample_pixel_bytes(frames, max_pixels, pixel_dtype)
    room = (0.8 * (host_bytes or 0)) - (offload_gib + 16) * GIB - sample  # the batch in use
    # one more worker: its peak + its queued batches
    per_worker = loader_host_bytes(sample, 2, 1, pixel_dtype) - loader_host_bytes(sample, 1, 1, pixel_dtype)
    fits = int(room // per_worker) if room > 0 else 1
    return max(1, min(cpus - 4, fits))


def write_mixture(folder: Path, videos: list[str], samples: int, answer_words: int) -> Path:
    """A llava-format video QA source over ``videos`` and its mixture YAML. The files are linked (or copied) into
    ``folder``: a mixture reads media inside its own folder only (``data.confine_media``)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, video in enumerate(videos):
        local = folder / f"{i}_{Path(video).name}"
        if not local.exists():
            try:
                os.link(video, local)
            except OSError:
                shutil.copyfile(video, local)
        names.append(local.name)
    words = "the red square moves left while a blue circle stays near the top of the frame".split()
    records = []
    for i in range(samples):
        video = names[i % len(names)]
        answer = " ".join(words[(i + k) % len(words)] for k in range(answer_words))
        records.append({"id": f"clip_{i}", "video": video,
                        "conversations": [{"from": "human", "value": "<video>\nDescribe what happens in the video."},
                                          {"from": "gpt", "value": answer}]})
    (folder / "video_qa.json").write_text(json.dumps(records))
    mixture = folder / "mixture.yaml"
    mixture.write_text("seed: 0\nsources:\n  - {name: video_qa, format: llava, path: video_qa.json}\n")
    return mixture


def write_caption_mixture(folder: Path, count: int, caption_words: int, scale: float = 1.0) -> Path:
    """``count`` image-caption records over real JPEG and PNG files of ``IMAGE_SIZES`` (times ``scale``) with smooth
    random content (a coarse random grid, resized bilinearly), and their mixture YAML. The records cycle over
    ``FILES`` files (each record is decoded from its file; writing 466 large PNGs took ~60 s of a GPU call)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = "a photo of a red car parked beside an old stone wall under a cloudy sky at dusk".split()
    records = []
    for i in range(count):
        f = i % FILES
        w, h = (max(28, round(d * scale)) for d in IMAGE_SIZES[f % len(IMAGE_SIZES)])
        coarse = rng.integers(0, 256, (max(2, h // 40), max(2, w // 40), 3), dtype=np.uint8)
        # every size both as JPEG and as PNG
        name = f"img_{f}.{'jpg' if (f + f // len(IMAGE_SIZES)) % 2 == 0 else 'png'}"
        if not (folder / name).exists():
            Image.fromarray(coarse).resize((w, h), Image.BILINEAR).save(folder / name)
        caption = " ".join(words[(i + k) % len(words)] for k in range(caption_words))
        records.append({"image": name, "caption": caption})
    (folder / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    mixture = folder / "mixture.yaml"
    mixture.write_text("seed: 0\nsources:\n  - {name: captions, format: caption, path: captions.jsonl}\n")
    return mixture


# What Triton prints for each kernel it autotuned in the process, not read from its cache (TRITON_PRINT_AUTOTUNING=1,
# triton/runtime/autotuner.py in Triton 3.6). Triton caches a kernel's choice on disk only when no config has a
# pre_hook, and eight of mamba-ssm 2.3.2's Mamba-2 backward kernels zero a buffer in one: a relaunch tunes them again.
_AUTOTUNED = re.compile(r"Triton autotuning for function (\w+),\nwith key as .*?,\nfinished after ([\d.]+)s", re.S)


def autotuning(text: str) -> dict | None:
    """The Triton autotuning in a run's output: ``kernels`` (name -> seconds of benchmarking, summed over its keys),
    ``tunings`` and ``seconds`` in all. None when nothing was tuned (or the run did not print it)."""
    found = [(name, float(seconds)) for name, seconds in _AUTOTUNED.findall(text)]
    if not found:
        return None
    kernels: dict[str, float] = {}
    for name, seconds in found:
        kernels[name] = round(kernels.get(name, 0.0) + seconds, 2)
    return {"tunings": len(found), "seconds": round(sum(s for _, s in found), 2), "kernels": kernels}


def summarise(log: Path, profiled: Collection[int] = ()) -> dict:
    """The run's row from its log.jsonl (module docstring). The ``profiled`` steps (debug.profile_steps) stay out of
    the medians: torch.profiler slows the step it records (2026-12-07, H100: a 5.0 s step took 39.7 s)."""
    steps = [json.loads(line) for line in log.read_text().splitlines() if '"loss"' in line] if log.exists() else []
    if not steps:
        return {"status": "no steps logged"}
    steady = [s for s in steps[2:] if s.get("step") not in profiled] or steps[2:] or steps[-1:]

    def median(key: str) -> float | None:
        values = [s[key] for s in steady if key in s]
        return float(f"{statistics.median(values):.4g}") if values else None

    peaks = [v for s in steps for k, v in s.items() if k.startswith("gpu_peak_gib")]
    return {"status": "ok", "steps": len(steps), "step_s": median("step_s"), "data_wait_frac": median("data_wait_frac"),
            "tokens_per_s": median("tokens_per_s"), "forward_s": median("forward_s"), "backward_s": median("backward_s"),
            "optimizer_s": median("optimizer_s"), "teacher_s": median("teacher_s"),
            "startup_s": steps[0].get("startup_s"), "mfu": median("mfu"), "model_tflops": median("model_tflops"),
            "peak_gib": max(peaks) if peaks else None, "step_s_all": [s["step_s"] for s in steps],
            # where the first step's compilation and autotuning sit (startup_s's largest part)
            "first_step": {k: steps[0][k] for k in ("step_s", "forward_s", "backward_s", "optimizer_s", "data_wait_frac")
                           if k in steps[0]},
            "loss": [round(s["loss"], 4) for s in steps]}


def _train_command(args: LaunchedArgs, name: str, mixture: Path, run_dir: Path, offload: bool) -> list[str]:
    """The run's command line: ``vamba train`` as one torchrun process (how DeepSpeed runs on one GPU), on the CPU
    too (the test's ``overrides``: its own model and precision, no DeepSpeed)."""
    spec = RUNS[name]
    if spec.data == "packed":
        data = [f"data.max_pixels={args.packed_max_pixels}", "data.packing=true",
                f"data.video_budget={args.packed_video_budget}", f"data.text_budget={args.packed_text_budget}"]
    else:
        data = [f"data.num_frames={args.frames}", f"data.max_pixels={args.max_pixels}"]
    checkpoint, model = (args.checkpoint_2b, args.model_2b) if spec.size == "2b" else (args.checkpoint, args.model)
    keys = [f"model={model}", f"model.path={checkpoint}", f"data.mixture={mixture}",
            f"data.tokenizer={checkpoint}", *data, "data.max_video_tokens=null", "data.max_text_tokens=4096",
            f"data.num_workers={args.workers}", f"data.pixel_dtype={args.pixel_dtype}",
            "optim.per_device_batch_size=1", "optim.global_batch_size=1",
            f"optim.max_steps={args.steps}", "logging.save_steps=0", "logging.save_final=false",
            "logging.logging_steps=1", "logging.progress=false", f"stage={spec.stage}", f"output_dir={run_dir}",
            "resume=replace"]  # a second call on a warm machine: the earlier run's files are moved aside, never read
    if args.profile_steps:
        keys.append(f"debug.profile_steps=[{','.join(str(n) for n in args.profile_steps)}]")
    if spec.lora:
        keys.append("stage.lora.enable=true")
    if spec.distill:
        keys += ["stage.distill.weight=1.0", "stage.distill.source=online", f"stage.distill.teacher={args.teacher}"]
    offload = offload and spec.offload
    if args.overrides:
        keys += args.overrides
    else:
        keys += ["model.dtype=bfloat16", "optim.bf16=true", "model.gradient_checkpointing=true",
                 "model.vision_compile=true", f"deepspeed={spec.zero}"]
        if offload:
            # the Trainer's torch AdamW steps the offloaded float32 states on the CPU (DeepSpeed's own CPU Adam would
            # be compiled first, a minute of the call)
            keys += ["+deepspeed.zero_optimization.offload_optimizer={device: cpu, pin_memory: true}",
                     "+deepspeed.zero_force_ds_cpu_optimizer=false"]
    # NOTE: torchrun's -m runs the module; without it "vamba.cli" is a script path that does not exist (exit code 2
    # after 4 s: the H100 run of 2026-12-07)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
            "-m", "vamba.cli", "train", *keys]


def fresh_caches(folder: Path) -> dict[str, str]:
    """The environment of a run started as on a fresh machine: ``folder``'s empty Triton and Inductor caches, the
    former holding only the Mamba-2 kernels' autotuning choices found in this process's Triton cache."""
    triton_dir = Path(os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache")
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "triton").mkdir(parents=True)
    (folder / "inductor").mkdir()
    for choices in triton_dir.glob("vamba-autotune-*.json"):
        shutil.copyfile(choices, folder / "triton" / choices.name)
    return {**os.environ, "TRITON_CACHE_DIR": str(folder / "triton"),
            "TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor")}


def optimizer_step_s(parameters: int, device: str = "cuda", measured: int | None = None) -> float:
    """Seconds of one fused AdamW step over ``parameters`` float32 weights (100M-element tensors), median of 3.
    With ``measured`` (< ``parameters``) the step is timed over that many weights and scaled linearly: the step is
    memory-bound, and the offloaded states of 2.94 B parameters would need another ~47 GiB of host memory."""
    import torch

    timed = min(parameters, measured or parameters)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sizes = [100_000_000] * (timed // 100_000_000) + [timed % 100_000_000]
    weights = [torch.zeros(n, device=device, requires_grad=True) for n in sizes if n]
    for w in weights:
        w.grad = torch.randn_like(w)
    opt = torch.optim.AdamW(weights, lr=1e-5, fused=True)
    times = []
    for _ in range(4):
        sync()
        start = time.perf_counter()
        opt.step()
        sync()
        times.append(time.perf_counter() - start)
    del opt, weights
    if device == "cuda":
        torch.cuda.empty_cache()
    return statistics.median(times[1:]) * parameters / timed


def offload_copy_s(parameters: int, measured: int = 300_000_000) -> float:
    """Seconds to move ``parameters`` bf16 values GPU -> pinned host memory and back (an offloaded optimizer's
    gradients out, its updated weights in), timed over ``measured`` values each way and scaled linearly (median of
    3 after a warm-up)."""
    import torch

    n = min(parameters, measured)
    gpu = torch.empty(n, dtype=torch.bfloat16, device="cuda")
    host = torch.empty(n, dtype=torch.bfloat16, pin_memory=True)
    times = []
    for _ in range(4):
        torch.cuda.synchronize()
        start = time.perf_counter()
        host.copy_(gpu, non_blocking=True)
        gpu.copy_(host, non_blocking=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    del gpu, host
    torch.cuda.empty_cache()
    return statistics.median(times[1:]) * parameters / n


def _bench_step(args: LaunchedArgs, mode: str, folder: Path, timeout: float, result: dict) -> dict:
    """The efficiency benchmark's VAMBA point ``mode`` at ``args.frames`` in its own process (with ``bench_extra``,
    whose rows go to ``result["bench_extra"]``)."""
    folder.mkdir(parents=True, exist_ok=True)
    points = ",".join([f"vamba:{mode}:{args.frames}", *args.bench_extra])
    cmd = [sys.executable, "-m", "vamba.cli", "bench", f"out={folder}", "tag=point", "models=[vamba]",
           f"points=[{points}]", "hour_point=false", "answer_tokens=0", "stage1_frames=0",
           f"budget_s={max(timeout - 30, 30):.0f}", "point_cap_s=600"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    (folder / "bench.log").write_text(proc.stdout + proc.stderr)
    path = folder / "efficiency_point.json"
    every = json.loads(path.read_text())["rows"] if path.exists() else []
    keep = ("model", "mode", "frames", "status", "total_ms", "first_ms", "all_ms", "vision_ms", "llm_ms", "peak_gib",
            "vision_mfu", "llm_mfu")
    result["bench_extra"] = [{k: r.get(k) for k in keep} for r in every
                             if f"{r.get('model')}:{r.get('mode')}:{r.get('frames')}" in args.bench_extra]
    rows = [r for r in every if r.get("mode") == mode and r.get("frames") == args.frames]
    if not rows or "total_ms" not in rows[0]:
        return {"status": f"no benchmark row (rc {proc.returncode}; see {folder / 'bench.log'})"}
    r = rows[0]
    return {"step_s": round(r["total_ms"] / 1e3, 3), "vision_s": round(r["vision_ms"] / 1e3, 3),
            "llm_s": round(r["llm_ms"] / 1e3, 3), "peak_gib": r.get("peak_gib"), "status": "ok"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(LaunchedArgs, list(sys.argv[1:] if argv is None else argv), prog="bench_train_launched.py",
                      doc=__doc__ or "")
    import torch

    from vamba.bench.build import device_tag

    started = time.perf_counter()
    unknown = [r for r in args.runs if r not in RUNS]
    if unknown or (not args.videos and any(RUNS[r].data != "packed" for r in args.runs)):
        raise ValueError(f"runs must be among {sorted(RUNS)} (got {unknown}) and videos= must name mp4 files for "
                         "every run but the packed ones")
    if any(RUNS[r].size == "2b" for r in args.runs) and not args.checkpoint_2b:
        raise ValueError("a 2b run (sft_mixed_2b) needs checkpoint_2b= (scripts/random_checkpoint.py size=2b)")
    if any(RUNS[r].distill for r in args.runs) and not args.teacher:
        raise ValueError("a distilling run needs teacher= (scripts/random_checkpoint.py kind=qwen2vl)")
    cuda = torch.cuda.is_available() and not args.overrides
    device = torch.device("cuda" if cuda else "cpu")
    _, tag = device_tag(device)
    gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else 0.0
    offload = args.offload == "true" or (args.offload == "auto" and cuda and gib < 100)
    if args.workers is None:  # stage 1 at 7B offloads AdamW's float32 states of 2.94 B parameters: ~47 GiB
        args.workers = auto_workers(args.frames, args.max_pixels, 47.0 if offload else 0.0, os.cpu_count() or 1,
                                    host_memory_bytes(), args.pixel_dtype)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"what": __doc__.splitlines()[0], **header(device), "device_memory_gib": round(gib, 1),
              "frames": args.frames, "checkpoint": args.checkpoint,
              "optimizer_offload": offload, "workers": args.workers, "cpu_count": os.cpu_count(), "runs": []}
    path = out / f"train_launched_{args.tag or tag}.json"
    mixtures: dict[str, Path] = {}
    if args.videos:
        mixtures["video"] = write_mixture(out / "data", args.videos, samples=max(args.steps * 2, 8),
                                          answer_words=args.answer_words)
    if any(RUNS[r].data == "packed" for r in args.runs):  # enough images for every row at ~400-800 tokens an image
        images = args.steps * args.packed_video_budget // 400 + 16
        mixtures["packed"] = write_caption_mixture(out / "images", images, caption_words=40, scale=args.image_scale)
    if any(RUNS[r].data == "mixed" for r in args.runs):  # the video samples and as many image-caption samples
        captions = write_caption_mixture(out / "mixed_images", max(args.steps * 2, 8), caption_words=40,
                                         scale=args.image_scale)
        mixtures["mixed"] = out / "mixed.yaml"
        mixtures["mixed"].write_text(
            "seed: 0\nsources:\n"
            f"  - {{name: video_qa, format: llava, path: {mixtures['video'].parent.name}/video_qa.json}}\n"
            f"  - {{name: captions, format: caption, path: {captions.parent.name}/captions.jsonl}}\n")
    bench: dict[str, dict] = {}
    for run in args.runs:
        left = args.budget_s - (time.perf_counter() - started)
        if left < args.min_run_s:
            result["runs"].append({"name": run, "status": f"skipped: {left:.0f} s of the budget left"})
            continue
        spec = RUNS[run]
        mode = spec.bench_mode
        run_dir = out / "runs" / run
        cmd = _train_command(args, run, mixtures[spec.data], run_dir, offload)
        env = fresh_caches(out / "fresh_caches" / run) if spec.fresh else None
        begun = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=left, env=env)
            rc, text = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            rc, text = "timeout", (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
        (out / f"{run}.log").write_text(text if isinstance(text, str) else str(text))
        row = {"name": run, "stage": spec.stage, "zero": spec.zero if not args.overrides else "none",
               "frames": "packed" if spec.data == "packed" else args.frames, "data": spec.data, "size": spec.size,
               "lora": spec.lora, "distill": spec.distill, "optimizer_offload": offload and spec.offload, "rc": rc,
               "wall_s": round(time.perf_counter() - begun, 1), **summarise(run_dir / "log.jsonl", args.profile_steps)}
        if rc != 0:  # the reason travels with the result (a GPU call returns a few files, not the run's folder)
            row["output_tail"] = str(text)[-3000:]
        tuned = autotuning(str(text))
        if tuned:
            row["autotune"] = tuned
        for table in sorted((run_dir / "profile").glob("step*_rank0.txt")):
            name = f"profile_{run}_{table.name.split('_')[0]}.txt"
            shutil.copyfile(table, out / name)
            row.setdefault("profiles", []).append(name)
        info = run_dir / "run_info.json"
        if info.exists():
            trainable = json.loads(info.read_text()).get("summary", {}).get("trainable", "")
            row["trainable"] = trainable
        if cuda and args.bench and mode is not None and mode not in bench:
            left = args.budget_s - (time.perf_counter() - started)
            folder, timeout = out / f"bench_{mode}", max(min(left, 300), 60)
            bench[mode] = _bench_step(args, mode, folder, timeout, result) if left > 90 else {"status": "skipped: budget"}
        if cuda and args.bench and bench.get(mode, {}).get("status") == "ok":
            params = _trainable_parameters(row.get("trainable", ""))
            if params and "optimizer_s" not in bench[mode]:
                # offloaded: the Trainer's fused AdamW steps the float32 states on the host's CPUs, and every step
                # moves the bf16 gradients to the host and the updated bf16 weights back (work the benchmark's
                # step, on one GPU, does not do; measured here as plain copies over pinned memory)
                bench[mode]["optimizer_s"] = round(optimizer_step_s(params, "cpu", 300_000_000) if offload
                                                   else optimizer_step_s(params), 3)
                bench[mode]["optimizer_on"] = "cpu" if offload else "cuda"
                bench[mode]["offload_copy_s"] = round(offload_copy_s(params), 3) if offload else 0.0
            b = bench[mode]
            row["bench_step_s"] = round(b["step_s"] + b.get("optimizer_s", 0.0) + b.get("offload_copy_s", 0.0), 3)
            row["bench"] = b
            if row.get("step_s"):
                row["step_over_bench"] = round(row["step_s"] / row["bench_step_s"], 3)
        result["runs"].append(row)
        path.write_text(json.dumps(result, indent=2))
    path.write_text(json.dumps(result, indent=2))
    (out / f"train_launched_{args.tag or tag}.md").write_text(report(result))
    print(report(result))
    return 0


def _trainable_parameters(summary: str) -> int | None:
    """The trainable count of ``vamba train``'s summary line ('trainable 2,940,000,000 / ...')."""
    import re

    m = re.search(r"trainable\s+([\d,]+)", summary)
    return int(m.group(1).replace(",", "")) if m else None


def report(result: dict) -> str:
    lines = [f"# `vamba train` as launched ({result['device']}, {result['frames']} frames per sample)", "",
             f"{result['date']}; commit {result['code_commit']}; optimizer offload: {result['optimizer_offload']}; "
             f"DataLoader workers: {result['workers']} of {result['cpu_count']} CPUs. Medians over the steps after the "
             "first two.", "",
             "| run | stage | zero | step s | forward / backward / optimizer s | bench step s | ratio | data wait | "
             "startup s | MFU | TFLOP/s | tokens/s | peak GiB |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['name']} | {r.get('stage', '-')} | {r.get('zero', '-')} | {r.get('status')} "
                         "| - | - | - | - | - | - | - | - | - |")
            continue
        phases = " / ".join(str(r.get(k)) for k in ("forward_s", "backward_s", "optimizer_s"))
        lines.append(f"| {r['name']} | {r['stage']} | {r['zero']} | {r['step_s']} | {phases} | {r.get('bench_step_s', '-')} | "
                     f"{r.get('step_over_bench', '-')} | {r['data_wait_frac']} | {r['startup_s']} | {r['mfu']} | "
                     f"{r['model_tflops']} | {r.get('tokens_per_s')} | {r['peak_gib']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
