"""Which of VAMBA's linear layers run in FP8 (``VambaConfig.fp8``; the op: vamba.ops.fp8, docs/fp8.md).

- ``none`` (default): every GEMM in the weights' dtype.
- ``vision``: the vision tower's blocks (qkv, proj, fc1, fc2: the fast forward in vamba.models.vision) and its
  merger. The patch embedding stays (K = 1,176 is not a multiple of 16).
- ``all``: ``vision`` and every linear layer of the decoder (self-attention, cross-attention, MLP, the Mamba-2
  blocks' projections), forward and backward (vamba.ops.fp8), for inputs of at least ``FP8_MIN_ROWS`` tokens: the
  prefill and the training step. A decoding step (one token per row) keeps the weights' dtype: it reads every weight
  once, and an FP8 GEMM would first read it to quantise it. The LM head stays (the logits' precision).

Switching swaps the class of the ``nn.Linear`` modules in place (``FP8Linear``, a subclass): parameters, their
names and the checkpoint keys stay as they are.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vamba.ops.fp8 import fp8_linear

FP8_MODES = ("none", "vision", "all")
FP8_MIN_ROWS = 64  # tokens per call from which the decoder's linear layers run in FP8


class FP8Linear(nn.Linear):
    """``nn.Linear`` whose product runs in FP8 (row-wise scales) for inputs of at least ``FP8_MIN_ROWS`` tokens."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() >= FP8_MIN_ROWS * self.in_features:
            return fp8_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def _swap(modules: nn.Module, to: type[nn.Linear]) -> int:
    n = 0
    for m in modules.modules():
        if type(m) in (nn.Linear, FP8Linear) and type(m) is not to:
            m.__class__ = to
            n += 1
    return n


def set_fp8(model: nn.Module, mode: str) -> None:
    """Apply ``mode`` (``FP8_MODES``) to a ``VambaForConditionalGeneration`` and record it in its config."""
    if mode not in FP8_MODES:
        raise ValueError(f"fp8 must be one of {FP8_MODES}, got {mode!r}")
    model.config.fp8 = mode
    _swap(model.visual.merger, FP8Linear if mode in ("vision", "all") else nn.Linear)
    _swap(model.model.layers, FP8Linear if mode == "all" else nn.Linear)


def vision_fp8(mode: str) -> bool:
    """Whether the vision tower's blocks run their GEMMs in FP8 under ``mode``."""
    return mode in ("vision", "all")
