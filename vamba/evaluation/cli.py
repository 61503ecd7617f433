"""``vamba eval``: evaluate a model on a benchmark, or re-score recorded replies.

Examples::

    vamba eval benchmark=lvbench data=/datasets/LVBench model.path=/ckpt/Vamba-Qwen2-VL-7B
    torchrun --nproc_per_node 8 -m vamba.cli eval benchmark=videomme data=/datasets/Video-MME model.path=...
    vamba eval benchmark=lvbench responses=runs/eval/lvbench/vamba/x/responses.jsonl extractor=mcq_extract
    vamba eval benchmark=mlvu data=/datasets/MLVU replay=old_run/responses.jsonl out=runs/replayed

Keys are validated (a typo fails at once, naming the closest key); ``key=value`` pairs only (docs/cli.md).
Ranks come from torchrun's ``RANK``/``WORLD_SIZE``; each rank evaluates its share and the last one to finish writes the report.
"""
from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING

from vamba.data.video import VideoDecodeError
from vamba.evaluation.benchmarks import NAMES, BenchmarkDataError, get_benchmark
from vamba.evaluation.run_names import default_run_dir, model_identity
from vamba.evaluation.runner import RunMismatchError, VideoUnavailableError, evaluate, rescore_file, resolve_protocol
from vamba.evaluation.sharding import dist_env
from vamba.utils.cli_args import ArgsError, auto_dtype, parse_args
from vamba.utils.logging import get_logger

logger = get_logger(__name__)

DEFAULT_ADAPTER = "vamba.inference.video_qa:load_video_qa_model"


@dataclass
class EvalModelConfig:
    """``model.*``: the model under evaluation, built by ``adapter`` (docs/evaluation.md, "Model interface")."""

    path: str | None = None  # checkpoint directory (released VAMBA layout or ours)
    adapter: str = DEFAULT_ADAPTER  # "module:function"(path, device, dtype) -> VideoQAModel
    device: str = "auto"  # auto (this rank's GPU, else CPU) | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bfloat16 on CUDA, float32 on CPU) | bfloat16 | float16 | float32
    min_pixels: int | None = None  # smart-resize limits; default: the checkpoint's processor files
    max_pixels: int | None = None  # (the smart-resize cap)
    # seconds one video may take to open and decode (decord hangs on some files): past it the video's questions are
    # skipped with the reason, or a strict run stops; null: no limit. Given to adapters that take decode_timeout_s.
    decode_timeout_s: float | None = 1800.0  # seconds to open and decode one video (None: no limit)
    # Videos decoded ahead of the model by worker processes, each exactly as the protocol reads one (decord, one
    # thread): a GPU then never waits minutes for an hour-long video. 0: each video decoded when it is encoded.
    decode_workers: int | None = None  # decode worker processes (0: none; None: CPU cores per rank - 1 on CUDA, else 0)
    decode_ahead: int | None = None  # at most this many videos decoding or decoded and waiting (None: workers + 2)
    # A video the model would otherwise wait for (none decoded is waiting) is decoded by all idle workers, each a part
    # of its frames: the first video of a run comes in seconds, not minutes. The frames are the same either way.
    decode_split: bool = True
    # FP8 layers on Hopper (VambaConfig.fp8, docs/fp8.md): none | vision | all. Recorded in run.json; a run with
    # FP8 is not comparable with the published numbers (they were made in bf16).
    fp8: str = "none"
    # Questions of one video decoded together as one left-padded batch (the adapter's answer_many), greedy decoding
    # only: a sampled protocol is refused. Recorded in run.json (bfloat16 batches may round otherwise than one row).
    answer_batch: int = 1  # questions of one video answered as one batch (1: one at a time)


@dataclass
class EvalConfig:
    benchmark: str = MISSING  # one of vamba.evaluation.benchmarks.NAMES
    data: str | None = None  # benchmark root folder (official layout, see docs/evaluation.md)
    protocol: str = "vamba"  # "vamba" (released VAMBA scripts) or "lmms_eval"
    extractor: str | None = None  # override the protocol's answer extractor
    out: str | None = None  # run directory (default: runs/eval/<benchmark>/<protocol>/<parent>-<model>[-k])
    responses: str | None = None  # re-score this responses.jsonl without a model
    replay: str | None = None  # answer from this responses.jsonl instead of a model
    limit: int | None = None  # first N questions only (smoke runs)
    num_frames: int | None = None  # override the protocol's frame count
    max_new_tokens: int | None = None  # override the protocol's answer length
    do_sample: bool | None = None  # override the protocol's decoding (true: sampling, false: greedy)
    seed: int = 0  # random-fallback extraction and sampled decoding
    annotation: str | None = None  # annotation file/folder, absolute or relative to data
    video_dir: str | None = None  # video folder, absolute or relative to data
    subtitles: bool = False  # Video-MME: add subtitles to the prompt
    strict: bool = False  # stop at the first missing or undecodable video (as the released scripts) instead of skipping
    # videos named by the annotation must lie inside data (or video_dir): a benchmark file from elsewhere cannot make
    # the run open /etc/passwd or ../../x; false reads any path
    confine_media: bool = True  # videos must lie inside data (or video_dir)
    progress: bool = True  # a progress bar on stderr
    model: EvalModelConfig = field(default_factory=EvalModelConfig)


# Spellings of earlier versions (and of the other commands before they shared one grammar) -> the key now.
DEPRECATED = {"frames": "num_frames", "out_dir": "out", "output_dir": "out"}


def parse(argv: list[str]) -> EvalConfig:
    return parse_args(EvalConfig, argv, prog="vamba eval", doc=f"{__doc__}\nbenchmarks: {', '.join(NAMES)}",
                      deprecated=DEPRECATED)


def load_model(cfg: EvalModelConfig):
    module_name, _, func = cfg.adapter.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), func)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load model adapter {cfg.adapter!r}: {e}. Re-score recorded replies with "
                           "responses=..., or pass model.adapter=<module:function> returning a VideoQAModel") from e
    limits = {k: v for k, v in (("min_pixels", cfg.min_pixels), ("max_pixels", cfg.max_pixels)) if v is not None}
    parameters = inspect.signature(factory).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    # Reading keys: given to an adapter that takes them; one that reads videos its own way is told they do not reach
    # it (the timeout always, the decode workers when set).
    for key, value in (("decode_timeout_s", cfg.decode_timeout_s), ("decode_workers", cfg.decode_workers),
                       ("decode_ahead", cfg.decode_ahead), ("decode_split", cfg.decode_split)):
        if key in parameters or takes_any:
            limits[key] = value
        elif key == "decode_timeout_s" or value not in (None, True):  # decode_split's default says nothing
            logger.warning("model.adapter %s takes no %s: model.%s does not apply", cfg.adapter, key, key)
    if cfg.fp8 != "none":  # never silently in bf16 when FP8 was asked for
        if "fp8" not in parameters and not takes_any:
            raise ValueError(f"model.adapter {cfg.adapter} takes no fp8: model.fp8={cfg.fp8} cannot apply")
        limits["fp8"] = cfg.fp8
    return factory(path=cfg.path, device=cfg.device, dtype=auto_dtype(cfg.dtype, cfg.device), **limits)


def replay_identity(responses: str) -> dict:
    """The identity of a replayed recording: named after the run directory it came from (``replay-<dir>``)."""
    identity = model_identity(responses)
    return {**identity, "name": "replay-" + (Path(identity["path"]).parent.name or "responses")}


def run(cfg: EvalConfig) -> tuple[dict, Path]:
    """Run (or re-score) as configured; returns the summary ({} while other ranks still work) and the run dir."""
    benchmark = get_benchmark(cfg.benchmark)
    if cfg.responses:
        out = Path(cfg.out or Path(cfg.responses).parent / f"rescore-{cfg.protocol}-{cfg.extractor or 'default'}")
        return rescore_file(benchmark, cfg.responses, out, protocol=cfg.protocol, extractor=cfg.extractor,
                            seed=cfg.seed), out
    if not cfg.data:
        raise ValueError("data=<benchmark folder> is required to run a model (or give responses=<file> to re-score)")
    spec = resolve_protocol(benchmark, cfg.protocol, extractor=cfg.extractor, num_frames=cfg.num_frames,
                            max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample, seed=cfg.seed)
    options = {"annotation": cfg.annotation, "video_dir": cfg.video_dir, "subtitles": cfg.subtitles}
    questions = benchmark.load(Path(cfg.data), options)
    if cfg.limit is not None:
        if cfg.limit < 1:
            raise ValueError(f"limit must be >= 1, got {cfg.limit}")
        questions = questions[:cfg.limit]
    if cfg.replay:
        from vamba.evaluation.replay import ReplayModel

        model, identity = ReplayModel.from_file(cfg.replay), replay_identity(cfg.replay)
    elif cfg.model.path:
        model, identity = load_model(cfg.model), model_identity(cfg.model.path)
    else:
        raise ValueError("give model.path=<checkpoint>, replay=<responses.jsonl> or responses=<responses.jsonl>")
    out = Path(cfg.out) if cfg.out else default_run_dir(Path("runs/eval") / benchmark.name / cfg.protocol, identity)
    rank, world = dist_env()
    roots = [Path(cfg.data)] + ([Path(cfg.data) / cfg.video_dir] if cfg.video_dir else [])  # absolute: itself
    summary = evaluate(benchmark, questions, model, out, protocol=cfg.protocol, spec=spec, seed=cfg.seed, rank=rank,
                       world_size=world, progress=cfg.progress, strict=cfg.strict,
                       media_roots=roots if cfg.confine_media else None, answer_batch=cfg.model.answer_batch,
                       reading={"decode_timeout_s": cfg.model.decode_timeout_s,
                                **{k: getattr(model, k) for k in ("decode_workers", "decode_ahead", "decode_split")
                                   if hasattr(model, k)}},
                       extra={"model": cfg.model.path, "model_id": identity, "replay": cfg.replay, "data": cfg.data,
                              "limit": cfg.limit, "subtitles": cfg.subtitles, "min_pixels": cfg.model.min_pixels,
                              "max_pixels": cfg.model.max_pixels, "fp8": cfg.model.fp8,
                              "dtype": auto_dtype(cfg.model.dtype, cfg.model.device)})
    return summary or {}, out


def main(argv: list[str]) -> int:
    if not argv:
        argv = ["--help"]
    try:
        cfg = parse(argv)
        summary, out = run(cfg)
    # Our own errors about what was asked for (keys, paths, benchmark files, a checkpoint, a video that cannot be
    # decoded) are one line; anything else (out of memory, a bug) surfaces with its traceback.
    except (ArgsError, ValueError, FileNotFoundError, BenchmarkDataError, RunMismatchError,
            VideoUnavailableError, VideoDecodeError) as e:
        print(f"vamba eval: {e}", file=sys.stderr)
        return 2
    if summary:
        answered = f"{summary['answered']} of {summary['expected']} answered"
        reasons = summary.get("not_comparable", [])
        note = f"; NOT comparable with the published numbers: {'; '.join(reasons)}" if reasons else ""
        print(f"{summary['title']} {summary['headline']} = {summary['score']:.2f} on {answered}{note}; "
              f"report: {out / 'report.md'}")
    return 0
