"""Typed configuration of ``vamba train`` (Hydra structured configs).

Precedence, lowest first: these dataclass defaults < ``configs/train.yaml`` and the group files it
selects (model, data, stage, deepspeed, fsdp, logging, debug) < ``experiment=`` (deltas only) < command-line
``key=value`` overrides. ``TrainConfig`` is registered in Hydra's ConfigStore as ``schema/train`` and is
the first entry of ``configs/train.yaml``'s defaults, so every YAML is merged *into* the schema: an unknown
key or a value of the wrong type fails while the config is composed; ``validate`` then checks values and
paths before anything is built. A recipe (``vamba.recipes``: the CPU demo, the ablations) extends the schema with
its own section, registered beside it (``register``) and selected by its experiment (``override /schema: demo``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from vamba.models.presets import TinyDims
from vamba.training.params import TRAINABLE

STAGES = tuple(TRAINABLE)
REPORTERS = ("wandb", "tensorboard")
DISTILL_SOURCES = ("online", "cache")


class ConfigError(ValueError):
    """A configuration value that cannot run (reported before anything is built)."""


@dataclass
class ModelConfig:
    """``path``: a Qwen2-VL checkpoint (converted: cross-attention from self-attention) or a VAMBA one.
    Without a path the model is built with random weights at ``size`` (Qwen2-VL-2B/7B dimensions or tiny)."""

    path: str | None = None  # checkpoint to start from (Qwen2-VL or VAMBA); None: random weights at size
    size: str = "tiny"  # tiny | 2b | 7b: dimensions when built without a path
    tiny: TinyDims = field(default_factory=TinyDims)
    dtype: str = "float32"  # weights at load; training precision is optim.bf16
    attention_backend: str = "auto"  # attention implementation (docs/model.md)
    vision_attention: str = "auto"  # the vision tower's forward (vamba.models.vision): auto | batched | varlen | reference
    vision_compile: bool = False  # torch.compile the fast vision forward's blocks
    fp8: str = "none"  # FP8 layers on Hopper (VambaConfig.fp8, docs/fp8.md): none | vision | all
    cross_attn_init: str = "self_attn"  # self_attn (copy of the layer's self-attention, the paper) | random
    use_alpha_balancing: bool = True  # x + a*SA + (1-a)*CA with a learnable a; false: the plain sum
    # mamba2 | selective_scan (Mamba-1-style, pure PyTorch: the ablation) | none (video tokens reach every
    # layer as the merger made them)
    vision_mixer: str = "mamba2"
    gradient_checkpointing: bool = False  # recompute each layer in backward: less memory, more time
    offload_checkpoints: bool = False  # with checkpointing: each layer's inputs wait in host memory (docs/model.md)
    allow_random_init: bool = False  # 2b/7b without a path: random weights (benchmarks, GPU tests) only if set


@dataclass
class DataConfig:
    """A mixture YAML (vamba.data.mixture) and how its records become batches (docs/data.md)."""

    mixture: str = MISSING  # the mixture YAML (vamba.data.mixture, docs/data.md)
    tokenizer: str | None = None  # None: model.path's tokenizer files (the data=synthetic group sets its own)
    num_frames: int = 16  # frames sampled per video
    sampling: str = "uniform"  # uniform | random | fps
    min_pixels: int = 56 * 56  # smart-resize floor, pixels per frame
    max_pixels: int = 224 * 224  # smart-resize cap, pixels per frame
    max_text_tokens: int | None = 2048
    max_video_tokens: int | None = None
    packing: bool = False  # pack samples into rows under text_budget / video_budget
    text_budget: int = 4096  # per packed row
    video_budget: int = 8192  # video tokens per packed row
    num_workers: int = 0  # DataLoader worker processes
    # uint8: workers send the resized frames' values in the patch layout (a quarter of float32's bytes, no float work
    # in the worker); the trainer normalises them on the GPU, bit-equal to float32 (docs/data.md)
    pixel_dtype: str = "float32"  # float32 | uint8
    cache_in_memory: bool = False  # keep processed samples (small sets, deterministic sampling: the demo)
    seed: int = 0
    # A released VAMBA data config as data.mixture (vamba.data.released): the released scripts' --max_img_seq_len,
    # the `video_num_frames: auto` budget in vision-encoder patches (about a quarter as many merged video tokens)
    max_img_seq_len: int = 120_000
    # A validation set (eval_loss every logging.eval_steps): the last val_fraction of the mixture's shuffled order,
    # held out of training, or a mixture YAML of its own (val_mixture). Neither: no validation.
    val_fraction: float = 0.0
    val_mixture: str | None = None
    # a row's media path that leaves its source's media_root (../.., an absolute path) is a counted skip, not a read
    confine_media: bool = True
    # caps on what a media header may claim, checked before decoding (null: none): frame count, pixels of a frame/image
    max_source_frames: int | None = 10_000_000
    max_source_pixels: int | None = 7680 * 4320


@dataclass
class DistillConfig:
    """Paper: L = L_LM + lambda * KL(teacher || VAMBA) on text next-token distributions (vamba.training.distill).

    ``weight`` is lambda; 0 loads no teacher at all. ``source``: ``online`` runs ``teacher`` (a Qwen2-VL
    checkpoint) on each batch; ``cache`` reads top-k logits written by ``vamba distill-cache``, after comparing
    the settings the cache recorded (teacher, data, frames, pixels, top_k: vamba.training.cache_settings) with
    this run's; ``check_cache=false`` turns a mismatch, or a cache too old to have recorded them, into a warning."""

    weight: float = 0.0  # lambda; 0 loads no teacher
    source: str = "online"  # online (run the teacher) | cache (read vamba distill-cache's output)
    teacher: str | None = None  # the teacher's Qwen2-VL checkpoint (source=online)
    cache_dir: str | None = None  # vamba distill-cache's output folder (source=cache)
    top_k: int | None = 64  # teacher tokens kept per position
    temperature: float = 1.0  # distillation temperature
    check_cache: bool = True  # a cache written for other settings is an error (false: a warning)


@dataclass
class LoraConfig:
    """``enable``: the stage trains LoRA adapters instead of full weights (vamba.training.build.apply_lora).

    Adapters go on every ``nn.Linear`` whose module name fully matches ``target_modules`` (a regex) and whose
    weight ``stage.trainable`` selects; every other parameter is frozen, as in the released train_vamba.py
    (PEFT freezes all but the adapters there and nothing is added back). ``train_in_full``: glob patterns of
    parameters to train in full beside the adapters (default none; e.g. ``[visual.merger.*]``)."""

    enable: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # the language model's linear layers, lm_head excluded: what the released code meant to adapt
    target_modules: str = r"model\.layers\.\d+\.(self_attn|cross_attn|mlp|vision_mixer\.mixer)\.\w+_proj"
    train_in_full: list[str] = field(default_factory=list)
    # DoRA (peft's use_dora): each adapted weight also learns a magnitude per output row (weight-decomposed LoRA,
    # as the released scripts' LoRA); merged into the plain weights in final/ like LoRA
    dora: bool = False


@dataclass
class StageConfig:
    """What a stage trains (glob patterns over parameter names, vamba.training.params) and its loss."""

    name: str = "pretrain"  # pretrain | sft: the stage's label (the stage=<name> group sets what trains)
    # glob patterns over parameter names (vamba.training.params): what this stage trains (its default: TRAINABLE)
    trainable: list[str] = field(default_factory=lambda: list(TRAINABLE["pretrain"]))
    distill: DistillConfig = field(default_factory=DistillConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class OptimConfig:
    lr: float = 1e-5  # peak learning rate
    weight_decay: float = 0.01
    scheduler: str = "cosine"  # the HF Trainer's lr_scheduler_type (cosine, linear, constant, ...)
    warmup_ratio: float = 0.03  # learning-rate warmup, as a fraction of the steps
    global_batch_size: int = 16  # = per_device_batch_size * data-parallel size * gradient accumulation (docs/training.md)
    per_device_batch_size: int = 1  # samples (packed rows) per device and micro-step
    max_steps: int = -1  # > 0 overrides epochs
    epochs: float = 1.0  # passes over the data
    max_grad_norm: float = 1.0  # gradient clipping
    bf16: bool = False  # bf16 mixed precision (float32 master weights: model.dtype)
    tf32: bool = False  # TF32 matmuls and convolutions on CUDA (the released scripts' --tf32 True); ignored on CPU
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
class FsdpConfig:
    """PyTorch FSDP2 (``fully_shard``) through the HF Trainer and accelerate, instead of DeepSpeed
    (docs/training.md "FSDP or DeepSpeed"): each decoder layer and the vision tower are one shard unit, the rest
    (embeddings, lm_head, final norm) the root's. Checkpoints hold full state dicts (rank 0 gathers them).
    ``enable`` and ``deepspeed`` exclude each other."""

    enable: bool = False  # train with FSDP2 under torchrun (fsdp=full_shard sets it); excludes deepspeed
    # true: parameters freed after each unit's forward and gathered again for its backward (full shard, about
    # ZeRO-3); false: kept from forward to backward (about ZeRO-2: gradients and optimizer states still sharded)
    reshard_after_forward: bool = True
    # parameters, gradients and optimizer states live in host memory; the optimizer steps on the CPU (slow)
    cpu_offload: bool = False


@dataclass
class LoggingConfig:
    report_to: list[str] = field(default_factory=list)  # wandb, tensorboard
    project: str = "vamba"
    logging_steps: int = 1
    # a resumable checkpoint every save_steps steps and at the last step (the Trainer's); 0: none at all (speed
    # measurements: at 7B one is the weights and the optimizer states, ~60 GB)
    save_steps: int = 500
    save_total_limit: int | None = 2
    save_final: bool = True  # false: no final/ model at the end
    progress: bool = True
    eval_steps: int = 0  # with a validation set (data.val_fraction / data.val_mixture): evaluate every N steps; 0: at each save
    # seconds wandb.init may take (WANDB_INIT_TIMEOUT): with WANDB_API_KEY set and no network it waited past a minute
    wandb_init_timeout: int = 30


@dataclass
class DebugConfig:
    """``overfit_batches`` > 0: train on the first N batches over and over (loss must go to ~0).
    ``stop_after_steps`` > 0: stop there with a checkpoint, as an interruption would (resume tests).
    ``stall_dump_s`` > 0: when a step (with its logging and saving) runs longer than this, every process prints
    all its threads' Python stacks to stderr, and again every ``stall_dump_s`` while it stays stuck: a hang
    under torchrun/DeepSpeed shows where each rank waits.
    ``profile_steps``: optimizer steps (from 1) recorded with ``torch.profiler`` into ``output_dir/profile/``
    (operator tables and Chrome traces per rank: vamba.training.profiling)."""

    overfit_batches: int = 0
    stop_after_steps: int = 0
    detect_anomaly: bool = False
    stall_dump_s: float = 0.0
    profile_steps: list[int] = field(default_factory=list)


@dataclass
class TrainConfig:
    output_dir: str = MISSING  # run directory: config, logs, checkpoints, final model
    # auto (latest checkpoint in output_dir, if any) | never (refused if output_dir holds a run) | replace (start anew,
    # the old run's files moved into output_dir/replaced-<time>/) | <checkpoint dir>
    resume: str = "auto"  # auto | never | replace | <checkpoint dir> (see above)
    seed: int = 0  # the run's random seed
    device: str = "auto"  # auto | cpu | cuda
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    deepspeed: dict[str, Any] | None = None  # a DeepSpeed config (configs/deepspeed/*.yaml); None = DDP / 1 process
    fsdp: FsdpConfig = field(default_factory=FsdpConfig)  # PyTorch FSDP2 instead of DeepSpeed (configs/fsdp/*.yaml)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)


def register(schemas: Mapping[str, type] | None = None) -> None:
    """Register the schemas with Hydra's ConfigStore, group ``schema`` at the top level of the config: ``train``
    (``TrainConfig``, the first default of ``configs/train.yaml``) and ``schemas`` (name -> a ``TrainConfig``
    subclass; the recipes' own, selected by an experiment with ``override /schema: <name>``)."""
    from hydra.core.config_store import ConfigStore

    from vamba.training.rundir import register_resolver

    register_resolver()  # ${vamba_run_name:}, the default output_dir's unique name
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


# logging.report_to -> (modules any one of which the HF Trainer's callback imports, the one-line fix when none is there).
# transformers' TensorBoardCallback takes torch.utils.tensorboard (the ``tensorboard`` package) or tensorboardX.
REPORTER_MODULES = {
    "tensorboard": (("tensorboard", "tensorboardX"), 'pip install -e ".[train]" (or: pip install tensorboard)'),
    "wandb": (("wandb",), "pip install wandb"),
}
WANDB_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")  # wandb.Settings.mode


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: the module is set to None in sys.modules (blocked)
        return False


def wandb_key_known() -> bool:
    """A W&B API key is available: ``WANDB_API_KEY`` or the ``wandb login`` entry in ~/.netrc."""
    import netrc
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_reporters(report_to: list[str]) -> None:
    """Every logging back-end importable, and wandb's mode usable, before anything is built (the Trainer would
    import them only once the model, the teacher and the data are ready, minutes in)."""
    for reporter in report_to:
        _one_of(reporter, REPORTERS, "logging.report_to")
        modules, fix = REPORTER_MODULES[reporter]
        if not any(_importable(m) for m in modules):
            raise ConfigError(f"logging.report_to={reporter} needs the {modules[0]} package, which is not installed: "
                              f"{fix}")
    if "wandb" in report_to:
        mode = os.environ.get("WANDB_MODE")
        if mode is not None and mode not in WANDB_MODES:
            raise ConfigError(f"WANDB_MODE={mode!r}: choose one of {', '.join(WANDB_MODES)}")
        if mode in ("online", "run", "shared") and not wandb_key_known():
            raise ConfigError(f"WANDB_MODE={mode} but no W&B API key (WANDB_API_KEY, or `wandb login`): set one, or "
                              f"unset WANDB_MODE to log offline into the run directory (`wandb sync` later)")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict of dotted keys (``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}``)."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, child in value.items():
        out.update(flatten(child, f"{prefix}.{key}" if prefix else key))
    return out


def check_model_size(m: ModelConfig) -> None:
    """``model.size`` (and, for ``tiny``, ``model.tiny``'s text dimensions) against the checkpoint at ``model.path``:
    the size picks the new Mamba-2 blocks' dimensions of a converted checkpoint, so a real 7B Qwen2-VL under the
    default ``model.size=tiny`` would get the tiny ones without a word. A checkpoint without a readable
    ``config.json`` is left to the loader's own error."""
    from vamba.models.presets import SIZES
    from vamba.utils.io import read_checkpoint_json

    try:
        config = read_checkpoint_json(m.path, "config.json")
    except (OSError, ValueError):
        return
    if config is None:
        return
    text = config.get("text_config") or config
    hidden, layers = text.get("hidden_size"), text.get("num_hidden_layers")
    if m.size == "tiny":
        expected = {"hidden_size": m.tiny.hidden_size, "num_hidden_layers": m.tiny.num_layers}
        keys = {"hidden_size": "model.tiny.hidden_size", "num_hidden_layers": "model.tiny.num_layers"}
    else:
        expected = {k: SIZES[m.size]["text"][k] for k in ("hidden_size", "num_hidden_layers")}
        keys = {"hidden_size": "model.size", "num_hidden_layers": "model.size"}
    found = {"hidden_size": hidden, "num_hidden_layers": layers}
    wrong = [k for k in expected if found[k] is not None and found[k] != expected[k]]
    if wrong:
        fits = [name for name, spec in SIZES.items() if spec["text"]["hidden_size"] == hidden]
        hint = f"model.size={fits[0]}" if fits else "model.size=tiny with model.tiny.* set to its dimensions"
        given = ", ".join(f"{keys[k]}={m.size} gives {expected[k]}" if keys[k] == "model.size" else
                          f"{keys[k]}={expected[k]}" for k in wrong)
        raise ConfigError(f"model.path={m.path} has " + ", ".join(f"{k} {found[k]}" for k in wrong) + f", but {given} "
                          f"(the size sets the new Mamba-2 blocks of a converted checkpoint): use {hint}")
    # A checkpoint that has Mamba-2 blocks is loaded with model.tiny's block settings (vamba.training.build): other
    # ones would fail on the weights' shapes far into the start (d_state, headdim) or run another chunk size.
    # A key the file leaves out has its default (a released checkpoint's short form).
    mixer = config.get("vision_mamba_mixer_config")
    if m.size == "tiny" and m.vision_mixer == "mamba2" and isinstance(mixer, dict):
        from vamba.models.configuration import MAMBA_DEFAULTS

        mixer = {**MAMBA_DEFAULTS, **mixer}
        settings = {"d_state": "mamba_d_state", "headdim": "mamba_headdim", "chunk_size": "mamba_chunk_size"}
        differ = [f"{name} {mixer[name]}, but model.tiny.{key}={getattr(m.tiny, key)}" for name, key in settings.items()
                  if mixer[name] != getattr(m.tiny, key)]
        if differ:
            raise ConfigError(f"model.path={m.path} has Mamba-2 blocks with " + "; ".join(differ) + ": set model.tiny."
                              "mamba_* to the checkpoint's (its config.json, vision_mamba_mixer_config)")


def validate(cfg: TrainConfig, *, paths: bool = True) -> None:
    """Check values and paths that the schema's types cannot express. Raises ``ConfigError``.

    ``paths=False`` checks the values only: a recipe checks the stage configs it will make before it writes the files
    they name (vamba.recipes.config.validate_demo), so a bad key fails in seconds rather than after its data."""
    def exists(path: str | None, key: str) -> None:
        if paths:
            _exists(path, key)

    _one_of(cfg.stage.name, STAGES, "stage.name")
    other = next((n for n, patterns in TRAINABLE.items() if n != cfg.stage.name and
                  tuple(cfg.stage.trainable) == patterns), None)
    if other is not None:  # `stage.name=sft` alone: the label changed, the trainable set did not
        raise ConfigError(f"stage.name={cfg.stage.name} but stage.trainable is the {other} stage's "
                          f"({list(TRAINABLE[other])}): stage.name is a label; choose the stage with "
                          f"stage={cfg.stage.name} (its trainable set, distillation and LoRA defaults)")
    from vamba.models.configuration import VISION_MIXER_KINDS
    from vamba.models.fp8 import FP8_MODES
    from vamba.models.presets import SIZES
    from vamba.models.vision import VISION_ATTENTION

    _one_of(cfg.model.size, ("tiny", *SIZES), "model.size")  # tiny: TinyDims
    if cfg.model.size != "tiny":  # model.tiny would be ignored without a word
        changed = [f"model.tiny.{f.name}" for f in fields(TinyDims)
                   if getattr(cfg.model.tiny, f.name) != getattr(TinyDims(), f.name)]
        if changed:
            raise ConfigError(f"{', '.join(changed)} set, but model.size={cfg.model.size}: model.tiny applies to "
                              "model.size=tiny only")
    _one_of(cfg.model.vision_mixer, (*VISION_MIXER_KINDS, "none"), "model.vision_mixer")
    _one_of(cfg.model.vision_attention, VISION_ATTENTION, "model.vision_attention")
    _one_of(cfg.model.fp8, FP8_MODES, "model.fp8")
    _one_of(cfg.data.pixel_dtype, ("float32", "uint8"), "data.pixel_dtype")
    _one_of(cfg.stage.distill.source, DISTILL_SOURCES, "stage.distill.source")
    check_reporters(list(cfg.logging.report_to))
    check_sharding(cfg)
    _one_of(cfg.parallel.decode, ("local", "all"), "parallel.decode")
    if any(step < 1 for step in cfg.debug.profile_steps):
        raise ConfigError(f"debug.profile_steps={list(cfg.debug.profile_steps)}: optimizer steps count from 1")
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
    exists(cfg.model.path, "model.path")
    if paths and cfg.model.path is not None:
        check_model_size(cfg.model)
    if cfg.model.path is None and cfg.model.size != "tiny" and not cfg.model.allow_random_init:
        raise ConfigError(f"model.path is required for the {cfg.model.size} model (a Qwen2-VL checkpoint to convert, "
                          "or a VAMBA checkpoint); model.allow_random_init=true trains random weights (benchmarks)")
    exists(cfg.data.mixture, "data.mixture")
    if paths and cfg.data.tokenizer is not None and cfg.model.path is not None and not Path(cfg.data.tokenizer).exists():
        # the usual cause: the default data=synthetic group's tokenizer left in place beside a real checkpoint
        raise ConfigError(f"data.tokenizer={cfg.data.tokenizer!r}: no such file or directory (a data group's "
                          "tokenizer left in place?); with model.path the checkpoint's own tokenizer is used when "
                          "data.tokenizer=null: "
                          "pick the data group of your data (data=image_captions for stage 1, data=video_instruct for "
                          "stage 2) or pass data.tokenizer=null")
    exists(cfg.data.tokenizer, "data.tokenizer")
    if cfg.data.tokenizer is None and cfg.model.path is None:
        raise ConfigError("data.tokenizer is required when model.path is not given")
    if not 0 <= cfg.data.val_fraction < 1:
        raise ConfigError(f"data.val_fraction={cfg.data.val_fraction}: must be in [0, 1)")
    if cfg.data.val_fraction > 0 and cfg.data.val_mixture is not None:
        raise ConfigError("data.val_fraction and data.val_mixture both set: choose one validation set")
    exists(cfg.data.val_mixture, "data.val_mixture")
    if has_validation(cfg.data) and cfg.parallel.context_parallel_size > 1:
        raise ConfigError("a validation set (data.val_fraction / data.val_mixture) with "
                          "parallel.context_parallel_size > 1 is not supported")
    if cfg.logging.eval_steps < 0:
        raise ConfigError(f"logging.eval_steps={cfg.logging.eval_steps}: must be >= 0 (0: at each save)")
    if cfg.logging.save_steps < 0:
        raise ConfigError(f"logging.save_steps={cfg.logging.save_steps}: must be >= 0 (0: no checkpoints)")
    if cfg.logging.save_steps == 0 and cfg.logging.eval_steps == 0 and has_validation(cfg.data):
        raise ConfigError("logging.save_steps=0 (no checkpoints) with a validation set: set logging.eval_steps, "
                          "which otherwise follows the saves")
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
        exists(d.teacher if d.source == "online" else d.cache_dir, f"stage.distill.{'teacher' if d.source == 'online' else 'cache_dir'}")
    o = cfg.optim
    if o.global_batch_size < 1 or o.per_device_batch_size < 1:
        raise ConfigError("optim.global_batch_size and optim.per_device_batch_size must be >= 1")
    if not 0 <= o.warmup_ratio < 1:
        raise ConfigError(f"optim.warmup_ratio={o.warmup_ratio}: must be in [0, 1)")
    if cfg.resume not in ("auto", "never", "replace"):
        exists(cfg.resume, "resume")


def check_sharding(cfg: TrainConfig) -> None:
    """DeepSpeed and FSDP exclude each other (each would own the model's sharding, the optimizer and checkpoints);
    each runs what it is tested with (docs/training.md "FSDP or DeepSpeed")."""
    zero_stage = ((cfg.deepspeed or {}).get("zero_optimization") or {}).get("stage")
    if cfg.stage.lora.enable and zero_stage == 3:
        # peft merges each adapter into its base weight in place, which ZeRO-3 holds partitioned: the run would
        # train to its last step and then fail writing final/ (size mismatch in merge_and_unload)
        raise ConfigError("stage.lora.enable=true with deepspeed ZeRO-3 is not supported (its partitioned weights "
                          "cannot be merged into final/): use deepspeed=zero2, the released scripts' LoRA setting")
    if not cfg.fsdp.enable:
        return
    if cfg.deepspeed is not None:
        raise ConfigError("deepspeed and fsdp are both set (deepspeed=<a config>, fsdp.enable=true): choose one, "
                          "deepspeed=none to train with FSDP or fsdp=none to train with DeepSpeed")
    if "WORLD_SIZE" not in os.environ:
        raise ConfigError("fsdp.enable=true needs a launch under torchrun (scripts/launch/torchrun.sh N ...): FSDP "
                          "shards over processes; in one process use fsdp=none")
    if cfg.stage.lora.enable:
        # the sharded PeftModel cannot be merged in place; final/ would hold the adapters, not the merged model
        raise ConfigError("stage.lora.enable=true with fsdp is not supported: use deepspeed=zero2 (the released "
                          "scripts' LoRA setting) or fsdp=none (DDP)")
    if cfg.parallel.context_parallel_size > 1:
        raise ConfigError("fsdp with parallel.context_parallel_size > 1 is not supported (untested): use deepspeed=zero3 "
                          "or fsdp=none with context parallelism")


def has_validation(d: DataConfig) -> bool:
    return d.val_fraction > 0 or d.val_mixture is not None


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
