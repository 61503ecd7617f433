"""VAMBA's parameter names by part, as glob patterns (``fnmatch``) over ``named_parameters()``, in one place.

Read by training's stage table (``vamba.training.params.TRAINABLE``: stage 1 trains ``NEW_MODULES``), the FLOP
counts (``vamba.models.flops``: the video stream's share) and the benchmarks' train modes (``vamba.bench.steps``).
"""
from __future__ import annotations

from fnmatch import fnmatchcase

# What VAMBA adds to Qwen2-VL: cross-attention, the Mamba-2 blocks over the video tokens, the alpha balance.
NEW_MODULES: tuple[str, ...] = ("*.cross_attn.*", "*.vision_mixer.*", "*.alpha")
# The vision tower with its merger (VAMBA's names, and transformers' Qwen2-VL's).
VISION_TOWER: tuple[str, ...] = ("visual.*", "model.visual.*")


def matches_any(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """``name`` fully matches one of the glob ``patterns``."""
    return any(fnmatchcase(name, p) for p in patterns)
