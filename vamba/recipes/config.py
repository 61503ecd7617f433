"""The recipes' configuration: ``TrainConfig`` with a ``demo`` section (and an ``ablation`` one), as schemas of their
own.

``vamba.training.config.register`` stores them beside ``TrainConfig`` in Hydra's ``schema`` group; an experiment
selects one (``configs/experiment/demo.yaml``: ``override /schema: demo``), so ``demo.*`` and ``ablation.*`` keys are
typed and checked like every other key (an unknown key fails while the config is composed) and ``vamba train`` runs
the recipe that owns the composed schema (``RECIPES``, ``vamba.cli``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vamba.training.config import ConfigError, TrainConfig


@dataclass
class DemoConfig:
    """The end-to-end CPU demo (vamba.recipes.demo); sizes chosen to finish in minutes on 2 cores."""

    num_videos: int = 600  # caption + open-question videos
    num_images: int = 1000  # single-frame shape/colour questions: the cheapest perception signal
    num_mc_videos: int = 1600  # multiple-choice training videos (the training set's benchmark split)
    num_bench_videos: int = 120  # held-out benchmark (another seed)
    num_frames: int = 8  # frames per video (training and the benchmark); was demo.frames
    frame_size: int = 112  # frames are frame_size^2 pixels: (frame_size / 28)^2 = 16 tokens per 2 frames
    shuffle_options: bool = False  # colour options in one fixed order (vamba.data.synth.SynthConfig)
    # event order asked as "what colour was the shape that appeared first?" (closed colour options) rather
    # than "which appeared first, the A or the B?" among 4 shuffled shapes (vamba.data.synth)
    order_question: str = "colour"
    # the tasks the videos cycle through (vamba.data.synth; "after" also needs the events' order)
    tasks: list[str] = field(default_factory=lambda: ["needle", "order", "count"])
    explain: bool = True  # multiple-choice replies name the option before its letter (see demo._reply)
    threads: int = 1  # torch threads of every training stage
    data_workers: int = 2  # processes encoding the synthetic videos (the same files for any number)
    teacher_steps: int = 800
    teacher_lr: float = 1e-3
    pretrain_steps: int = 200
    pretrain_lr: float = 2e-3
    sft_steps: int = 400
    sft_lr: float = 1e-3
    batch_size: int = 16
    distill_weight: float = 1.0


@dataclass
class ClaimConfig:
    """A claim of the paper as two variants of a sweep: ``better`` should score higher than ``worse``."""

    claim: str = ""  # what the paper says, in words
    better: str = ""  # the variant the paper finds better
    worse: str = ""
    paper: str = ""  # the paper's numbers, quoted beside ours
    tasks: list[str] = field(default_factory=list)  # tasks shown beside overall in the table (all are in the JSON)


@dataclass
class AblationConfig:
    """Miniature ablations (vamba.recipes.ablation): demo runs that differ from this config by a few
    overrides, all sharing the demo's data and its teacher, each repeated over ``seeds``; every run is
    evaluated after stage 1 and after stage 2, and each claim compared on the same questions (paired)."""

    variants: dict[str, list[str]] = field(default_factory=dict)  # name -> key=value overrides ([] = as is)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    workers: int = 2  # runs in parallel (one process and one torch thread each)
    claims: list[ClaimConfig] = field(default_factory=list)
    resamples: int = 10_000  # bootstrap resamples per interval (vamba.evaluation.stats)


@dataclass
class DemoTrainConfig(TrainConfig):
    """``vamba train experiment=demo``: the whole recipe (vamba.recipes.demo) configured by ``demo``; the other
    sections configure each of its training stages."""

    demo: DemoConfig = field(default_factory=DemoConfig)


@dataclass
class AblationTrainConfig(DemoTrainConfig):
    """``vamba train experiment=mini_ablations``: the demo's recipe per variant and seed (vamba.recipes.ablation)."""

    ablation: AblationConfig = field(default_factory=AblationConfig)


def validate_demo(cfg: DemoTrainConfig) -> None:
    """Check the ``demo`` values the schema's types cannot express. Raises ``ConfigError``."""
    from vamba.data.synth import ORDER_QUESTIONS, TASKS

    if cfg.demo.order_question not in ORDER_QUESTIONS:
        raise ConfigError(f"demo.order_question={cfg.demo.order_question!r}: "
                          f"choose one of {', '.join(ORDER_QUESTIONS)}")
    unknown = [t for t in cfg.demo.tasks if t not in TASKS]
    if not cfg.demo.tasks or unknown or len(set(cfg.demo.tasks)) != len(cfg.demo.tasks):
        raise ConfigError(f"demo.tasks={list(cfg.demo.tasks)}: distinct names among {', '.join(TASKS)}")


def validate_ablation(cfg: AblationTrainConfig) -> None:
    """``validate_demo`` plus the ``ablation`` values: every claim names two variants of the sweep."""
    validate_demo(cfg)
    if cfg.ablation.workers < 1 or cfg.ablation.resamples < 100:
        raise ConfigError(f"ablation.workers must be >= 1 and ablation.resamples >= 100, got "
                          f"{cfg.ablation.workers}, {cfg.ablation.resamples}")
    for i, claim in enumerate(cfg.ablation.claims):
        for key in ("better", "worse"):
            if getattr(claim, key) not in cfg.ablation.variants:
                raise ConfigError(f"ablation.claims[{i}].{key}={getattr(claim, key)!r} is not a variant "
                                  f"(ablation.variants: {', '.join(cfg.ablation.variants)})")
        unknown = [t for t in claim.tasks if t not in cfg.demo.tasks]
        if unknown:
            raise ConfigError(f"ablation.claims[{i}].tasks: {unknown} not in demo.tasks={list(cfg.demo.tasks)}")
