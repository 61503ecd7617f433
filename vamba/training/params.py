"""Which parameters a stage trains (``TRAINABLE``, the one table of them), and which of them get no weight decay
(``NO_DECAY_PATTERNS``, read by ``VambaTrainer.get_decay_parameter_names``).

Patterns are shell-style globs (``fnmatch``) over ``named_parameters()`` names, e.g.
``*.cross_attn.*``. A pattern that matches nothing is an error: a typo must not silently freeze
(or train) the wrong modules.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from vamba.models.names import NEW_MODULES
from vamba.models.zero import full_numel

# stage -> what it trains: the one table (NEW_MODULES: vamba.models.names). configs/stage/<stage>.yaml show the same list to users (a test checks it);
# StageConfig's default, the CPU demo (trainable_for) and the benchmarks' train modes (vamba.bench.steps) read it here.
TRAINABLE: dict[str, tuple[str, ...]] = {
    "pretrain": NEW_MODULES,  # stage 1: only the new modules
    "sft": ("visual.merger.*", "model.*", "lm_head.*"),  # stage 2: the merger and the language model; not the ViT
}

# Parameters without weight decay: SSM dynamics (A_log, D, dt_bias), every norm weight, biases and the
# alpha balance. Decaying A_log or dt_bias pulls the state-space dynamics towards arbitrary values.
NO_DECAY_PATTERNS: tuple[str, ...] = ("*.A_log", "*.D", "*.dt_bias", "*norm*.weight", "*.bias", "*alpha")


@dataclass(frozen=True)
class TrainableSummary:
    trainable: int
    frozen: int
    per_pattern: dict[str, int]

    def __str__(self) -> str:
        total = self.trainable + self.frozen
        lines = [f"trainable {self.trainable:,} / {total:,} parameters ({100 * self.trainable / max(total, 1):.2f}%)"]
        lines += [f"  {pattern}: {count:,}" for pattern, count in self.per_pattern.items()]
        return "\n".join(lines)


def trainable_for(stage: str, vision_mixer: bool = True, alpha: bool = True) -> list[str]:
    """``TRAINABLE[stage]`` less the patterns of modules a model was built without (``vision_mixer``: Mamba-2 blocks;
    ``alpha``: the alpha balance), which would match nothing."""
    absent = {"*.vision_mixer.*"} if not vision_mixer else set()
    absent |= {"*.alpha"} if not alpha else set()
    return [p for p in TRAINABLE[stage] if p not in absent]


def select_trainable(model: nn.Module, patterns: list[str], always_frozen: frozenset[str] = frozenset()
                     ) -> TrainableSummary:
    """Set ``requires_grad`` to True exactly for parameters matching one of ``patterns`` and not named in
    ``always_frozen`` (parameters without effect); the summary counts what then trains.

    Raises:
        ValueError: a pattern matches no parameter (lists a few parameter names to help).
    """
    per_pattern = {p: 0 for p in patterns}
    matched: set[str] = set()
    trainable = frozen = 0
    for name, param in model.named_parameters():
        hit = [p for p in patterns if fnmatchcase(name, p)]
        matched.update(hit)
        train = bool(hit) and name not in always_frozen
        numel = full_numel(param)
        param.requires_grad_(train)
        if train:
            trainable += numel
            for p in hit:
                per_pattern[p] += numel
        else:
            frozen += numel
    unused = [p for p in patterns if p not in matched]
    if unused:
        names = [n for n, _ in model.named_parameters()]
        sample = ", ".join(names[:: max(1, len(names) // 8)][:8])
        raise ValueError(f"trainable pattern(s) {unused} match no parameter; names look like: {sample}")
    return TrainableSummary(trainable, frozen, per_pattern)


@dataclass(frozen=True)
class LoraSummary:
    """What a LoRA stage trains (vamba.training.build.apply_lora): the adapter parameters (``lora_A``, ``lora_B``)
    on ``adapted_modules`` linear layers, the parameters trained in full beside them per
    ``stage.lora.train_in_full`` pattern, and the frozen rest (the adapted layers' base weights included)."""

    adapters: int
    adapted_modules: int
    in_full: dict[str, int]
    frozen: int

    def __str__(self) -> str:
        full = sum(self.in_full.values())
        trainable = self.adapters + full
        total = trainable + self.frozen
        lines = [f"LoRA: trainable {trainable:,} / {total:,} parameters ({100 * trainable / max(total, 1):.2f}%): "
                 f"adapters {self.adapters:,} on {self.adapted_modules} linear layers, in full {full:,}"]
        lines += [f"  in full {pattern}: {count:,}" for pattern, count in self.in_full.items()]
        if not self.in_full:
            lines.append("  nothing trains in full beside the adapters (stage.lora.train_in_full=[])")
        return "\n".join(lines)

