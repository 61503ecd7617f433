"""Which parameters a stage trains, and which of them get no weight decay (``NO_DECAY_PATTERNS``, read by
``VambaTrainer.get_decay_parameter_names``).

Patterns are shell-style globs (``fnmatch``) over ``named_parameters()`` names, e.g.
``*.cross_attn.*``. A pattern that matches nothing is an error: a typo must not silently freeze
(or train) the wrong modules.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from vamba.models.zero import full_numel

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


def matches_any(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def select_trainable(model: nn.Module, patterns: list[str]) -> TrainableSummary:
    """Set ``requires_grad`` to True exactly for parameters matching one of ``patterns``.

    Raises:
        ValueError: a pattern matches no parameter (lists a few parameter names to help).
    """
    per_pattern = {p: 0 for p in patterns}
    trainable = frozen = 0
    for name, param in model.named_parameters():
        hit = [p for p in patterns if fnmatchcase(name, p)]
        numel = full_numel(param)
        for p in hit:
            per_pattern[p] += numel
        param.requires_grad_(bool(hit))
        if hit:
            trainable += numel
        else:
            frozen += numel
    unused = [p for p, n in per_pattern.items() if n == 0]
    if unused:
        names = [n for n, _ in model.named_parameters()]
        sample = ", ".join(names[:: max(1, len(names) // 8)][:8])
        raise ValueError(f"trainable pattern(s) {unused} match no parameter; names look like: {sample}")
    return TrainableSummary(trainable, frozen, per_pattern)
