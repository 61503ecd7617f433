"""Typed configuration of ``vamba train`` (Hydra structured configs).

Precedence, lowest first: these dataclass defaults < ``configs/train.yaml`` and the group files it
selects (model, data, stage, deepspeed, logging, debug) < ``experiment=`` (deltas only) < command-line
``key=value`` overrides. ``TrainConfig`` is registered in Hydra's ConfigStore as ``schema/train`` and is
the first entry of ``configs/train.yaml``'s defaults, so every YAML is merged *into* the schema: an unknown
key or a value of the wrong type fails while the config is composed; ``validate`` then checks values and
paths before anything is built. A recipe (``vamba.recipes``: the CPU demo, the ablations) extends the schema with
its own section, registered beside it (``register``) and selected by its experiment (``override /schema: demo``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

STAGES = ("pretrain", "sft")
REPORTERS = ("wandb", "tensorboard")
DISTILL_SOURCES = ("online", "cache")


class ConfigError(ValueError):
    """A configuration value that cannot run (reported before anything is built)."""


@dataclass
class TinyDims:
    """Dimensions of the ``tiny`` model (CPU tests and the demo); the vocabulary comes from the tokenizer."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    vision_depth: int = 2
    vision_embed_dim: int = 32
    vision_heads: int = 2
    mamba_d_state: int = 16
    mamba_headdim: int = 16
    mamba_chunk_size: int = 64


@dataclass
class ModelConfig:
    """``path``: a Qwen2-VL checkpoint (converted: cross-attention from self-attention) or a VAMBA one.
    Without a path the model is built with random weights at ``size`` (Qwen2-VL-2B/7B dimensions or tiny)."""

    name: str = "tiny"
    path: str | None = None
    size: str = "tiny"
    tiny: TinyDims = field(default_factory=TinyDims)
    dtype: str = "float32"  # weights at load; training precision is optim.bf16
    attention_backend: str = "auto"
    vision_attention: str = "auto"  # the vision tower's forward (vamba.models.vision): auto | batched | varlen | reference
    vision_compile: bool = False  # torch.compile the fast vision forward's blocks
    cross_attn_init: str = "self_attn"
    use_alpha_balancing: bool = True
    # mamba2 | selective_scan (Mamba-1-style, pure PyTorch: the ablation) | none (video tokens reach every
    # layer as the merger made them)
    vision_mixer: str = "mamba2"
    gradient_checkpointing: bool = False
    offload_checkpoints: bool = False  # with checkpointing: each layer's inputs wait in host memory (docs/model.md)
    allow_random_init: bool = False  # 2b/7b without a path: random weights (benchmarks, GPU tests) only if set


@dataclass
class DataConfig:
    """A mixture YAML (vamba.data.mixture) and how its records become batches (docs/data.md)."""

    name: str = "synthetic"
    mixture: str = MISSING
    tokenizer: str | None = None  # default: the model path (its tokenizer files)
    num_frames: int = 16
    sampling: str = "uniform"  # uniform | random | fps
    min_pixels: int = 56 * 56
    max_pixels: int = 224 * 224
    max_text_tokens: int | None = 2048
    max_video_tokens: int | None = None
    packing: bool = False
    text_budget: int = 4096  # per packed row
    video_budget: int = 8192
    num_workers: int = 0
    cache_in_memory: bool = False  # keep processed samples (small sets, deterministic sampling: the demo)
    seed: int = 0
    # a row's media path that leaves its source's media_root (../.., an absolute path) is a counted skip, not a read
    confine_media: bool = True
    # caps on what a media header may claim, checked before decoding (null: none): frame count, pixels of a frame/image
    max_source_frames: int | None = 10_000_000
    max_source_pixels: int | None = 7680 * 4320


@dataclass
class DistillConfig:
    """Paper: L = L_LM + lambda * KL(teacher || VAMBA) on text next-token distributions (vamba.training.distill).

    ``weight`` is lambda; 0 loads no teacher at all. ``source``: ``online`` runs ``teacher`` (a Qwen2-VL
    checkpoint) on each batch; ``cache`` reads top-k logits written by ``vamba distill-cache``."""

    weight: float = 0.0
    source: str = "online"
    teacher: str | None = None
    cache_dir: str | None = None
    top_k: int | None = 64
    temperature: float = 1.0


@dataclass
class LoraConfig:
    enable: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str = r"model\.layers\.\d+\.(self_attn|cross_attn|mlp)\.\w+_proj"  # regex over module names


@dataclass
class StageConfig:
    """What a stage trains (glob patterns over parameter names, vamba.training.params) and its loss."""

    name: str = "pretrain"
    trainable: list[str] = field(default_factory=lambda: ["*.cross_attn.*", "*.vision_mixer.*", "*.alpha"])
    distill: DistillConfig = field(default_factory=DistillConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class OptimConfig:
    lr: float = 1e-5
    weight_decay: float = 0.01
    scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    global_batch_size: int = 16  # = per_device_batch_size * data-parallel size * gradient accumulation (docs/training.md)
    per_device_batch_size: int = 1
    max_steps: int = -1  # > 0 overrides epochs
    epochs: float = 1.0
    max_grad_norm: float = 1.0
    bf16: bool = False
    adam_beta2: float = 0.999


@dataclass
class ParallelConfig:
    """``context_parallel_size`` > 1: groups of that many consecutive ranks share one batch, the video cut along time
    across them (vamba.parallel, docs/context_parallel.md); data parallelism runs over the groups."""

    context_parallel_size: int = 1
    # local: each rank decodes only its frames; all: every rank decodes whole videos and keeps its cut (a video
    # that fails to decode is then skipped on every rank alike; with local a frame-level failure on one rank stops
    # the run with an error naming the samples, since the group's ranks must train on the same samples)
    decode: str = "local"
    # seconds a collective may wait for the other ranks before the run fails (torch's process-group timeout; HF's
    # ddp_timeout). A failing rank exits at once (vamba.utils.distributed.exit_failed); this bounds the wait when a
    # rank dies without the launcher noticing, or hangs.
    ddp_timeout: int = 1800


@dataclass
class LoggingConfig:
    report_to: list[str] = field(default_factory=list)  # wandb, tensorboard
    project: str = "vamba"
    logging_steps: int = 1
    save_steps: int = 500
    save_total_limit: int | None = 2
    progress: bool = True
    # seconds wandb.init may take (WANDB_INIT_TIMEOUT): with WANDB_API_KEY set and no network it waited past a minute
    wandb_init_timeout: int = 30


@dataclass
class DebugConfig:
    """``overfit_batches`` > 0: train on the first N batches over and over (loss must go to ~0).
    ``stop_after_steps`` > 0: stop there with a checkpoint, as an interruption would (resume tests).
    ``stall_dump_s`` > 0: when a step (with its logging and saving) runs longer than this, every process prints
    all its threads' Python stacks to stderr, and again every ``stall_dump_s`` while it stays stuck: a hang
    under torchrun/DeepSpeed shows where each rank waits."""

    overfit_batches: int = 0
    stop_after_steps: int = 0
    detect_anomaly: bool = False
    stall_dump_s: float = 0.0


@dataclass
class TrainConfig:
    output_dir: str = MISSING
    resume: str = "auto"  # auto (latest checkpoint in output_dir, if any) | never | <checkpoint dir>
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    deepspeed: dict[str, Any] | None = None  # a DeepSpeed config (configs/deepspeed/*.yaml); None = DDP / 1 process
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)


def register(schemas: Mapping[str, type] | None = None) -> None:
    """Register the schemas with Hydra's ConfigStore, group ``schema`` at the top level of the config: ``train``
    (``TrainConfig``, the first default of ``configs/train.yaml``) and ``schemas`` (name -> a ``TrainConfig``
    subclass; the recipes' own, selected by an experiment with ``override /schema: <name>``)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, node in {"train": TrainConfig, **(schemas or {})}.items():
        store.store(group="schema", name=name, node=node, package="_global_")


def unknown_keys(node, prefix: str = "") -> list[str]:
    """Keys of a composed config that its schema does not have. Hydra rejects ``optim.lrr=1`` while composing,
    but adds a key given as ``+optim.lrr=1`` (or ``++``) even to a typed node, and ``to_object`` then drops it
    without a word."""
    import dataclasses

    from omegaconf import DictConfig, OmegaConf

    cls = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(cls):
        return []  # a free-form dict (deepspeed, ablation.variants)
    names = {f.name for f in dataclasses.fields(cls)}
    found = []
    for key in node.keys():
        if key not in names:
            found.append(f"{prefix}{key}")
        elif isinstance(child := node._get_node(key), DictConfig):
            found += unknown_keys(child, f"{prefix}{key}.")
    return found


def from_dictconfig(cfg) -> TrainConfig:
    """The composed DictConfig as a typed ``TrainConfig``; a required value left at ``???`` or a key the schema
    does not have is a ConfigError."""
    from omegaconf import OmegaConf

    unknown = unknown_keys(cfg)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}: not in the schema (vamba/training/config.py, "
                          f"a recipe's in vamba/recipes/config.py); "
                          f"check the spelling (`--cfg job` prints every key)")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"required value(s) not set: {', '.join(missing)} (pass them as key=value)")
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def _one_of(value: str, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: choose one of {', '.join(allowed)}")


def _exists(path: str | None, key: str) -> None:
    if path is not None and not Path(path).exists():
        raise ConfigError(f"{key}={path!r}: no such file or directory")


def validate(cfg: TrainConfig) -> None:
    """Check values and paths that the schema's types cannot express. Raises ``ConfigError``."""
    _one_of(cfg.stage.name, STAGES, "stage.name")
    from vamba.models.configuration import VISION_MIXER_KINDS
    from vamba.models.presets import SIZES
    from vamba.models.vision import VISION_ATTENTION

    _one_of(cfg.model.size, ("tiny", *SIZES), "model.size")  # tiny: TinyDims
    _one_of(cfg.model.vision_mixer, (*VISION_MIXER_KINDS, "none"), "model.vision_mixer")
    _one_of(cfg.model.vision_attention, VISION_ATTENTION, "model.vision_attention")
    _one_of(cfg.stage.distill.source, DISTILL_SOURCES, "stage.distill.source")
    for reporter in cfg.logging.report_to:
        _one_of(reporter, REPORTERS, "logging.report_to")
    _one_of(cfg.parallel.decode, ("local", "all"), "parallel.decode")
    if cfg.parallel.ddp_timeout < 1:
        raise ConfigError(f"parallel.ddp_timeout={cfg.parallel.ddp_timeout}: must be >= 1 (seconds)")
    if cfg.parallel.context_parallel_size < 1:
        raise ConfigError(f"parallel.context_parallel_size={cfg.parallel.context_parallel_size}: must be >= 1")
    if cfg.parallel.context_parallel_size > 1 and cfg.model.vision_mixer == "selective_scan":
        raise ConfigError("parallel.context_parallel_size > 1 supports model.vision_mixer=mamba2 or none")
    if cfg.parallel.context_parallel_size > 1 and cfg.stage.distill.weight > 0 and cfg.stage.distill.source == "online":
        raise ConfigError("parallel.context_parallel_size > 1 cannot run the online distillation teacher (a Qwen2-VL "
                          "with full self-attention over the whole video on every rank); write its top-k logits "
                          "first (vamba distill-cache) and train with stage.distill.source=cache")
    _exists(cfg.model.path, "model.path")
    if cfg.model.path is None and cfg.model.size != "tiny" and not cfg.model.allow_random_init:
        raise ConfigError(f"model.path is required for the {cfg.model.size} model (a Qwen2-VL checkpoint to convert, "
                          "or a VAMBA checkpoint); model.allow_random_init=true trains random weights (benchmarks)")
    _exists(cfg.data.mixture, "data.mixture")
    _exists(cfg.data.tokenizer, "data.tokenizer")
    if cfg.data.tokenizer is None and cfg.model.path is None:
        raise ConfigError("data.tokenizer is required when model.path is not given")
    if cfg.data.cache_in_memory and (cfg.data.sampling == "random" or cfg.data.num_workers > 0):
        raise ConfigError("data.cache_in_memory needs deterministic frames (sampling uniform or fps) and "
                          "num_workers=0 (workers would each keep their own copy)")
    if not cfg.stage.trainable:
        raise ConfigError("stage.trainable is empty: nothing would train")
    d = cfg.stage.distill
    if d.weight < 0:
        raise ConfigError(f"stage.distill.weight={d.weight}: lambda must be >= 0")
    if d.weight > 0 and d.source == "online" and not d.teacher:
        raise ConfigError("stage.distill.weight > 0 with source=online needs stage.distill.teacher=<Qwen2-VL checkpoint>")
    if d.weight > 0 and d.source == "cache" and not d.cache_dir:
        raise ConfigError("stage.distill.weight > 0 with source=cache needs stage.distill.cache_dir")
    if d.weight > 0:
        _exists(d.teacher if d.source == "online" else d.cache_dir, f"stage.distill.{'teacher' if d.source == 'online' else 'cache_dir'}")
    o = cfg.optim
    if o.global_batch_size < 1 or o.per_device_batch_size < 1:
        raise ConfigError("optim.global_batch_size and optim.per_device_batch_size must be >= 1")
    if not 0 <= o.warmup_ratio < 1:
        raise ConfigError(f"optim.warmup_ratio={o.warmup_ratio}: must be in [0, 1)")
    if cfg.resume not in ("auto", "never"):
        _exists(cfg.resume, "resume")


def gradient_accumulation(optim: OptimConfig, world_size: int, context_parallel_size: int = 1) -> int:
    """Micro-batches per optimizer step so that per_device * data-parallel size * accumulation == global batch
    (the data-parallel size is the world size over the context-parallel size: a CP group shares its batches)."""
    if world_size % context_parallel_size:
        raise ConfigError(f"parallel.context_parallel_size={context_parallel_size} does not divide the world size "
                          f"{world_size}")
    data_parallel = world_size // context_parallel_size
    per_step = optim.per_device_batch_size * data_parallel
    if optim.global_batch_size % per_step:
        raise ConfigError(f"optim.global_batch_size={optim.global_batch_size} is not a multiple of "
                          f"per_device_batch_size ({optim.per_device_batch_size}) x data-parallel size ({data_parallel})")
    return optim.global_batch_size // per_step
