"""The hook through which the model runs with its video stream sharded over ranks (context parallelism).

The model does not know how ranks talk; it only calls these methods. ``vamba.parallel`` implements them
(docs/context_parallel.md) and a trainer attaches one with ``VambaForConditionalGeneration.set_context_parallel``.
With a hook attached, a forward's visual inputs are this rank's *pieces* (whole temporal patches, in time order,
``visual_t_offset`` giving each piece's first temporal patch within its item): the vision tower encodes them,
the local video stream [B, L, D] holds each row's local tokens first and padding after, and every decoder layer
asks the per-forward ``VideoShardHooks`` for its Mamba-2 update and its cross-attention.
"""
from __future__ import annotations

from typing import Protocol

from torch import Tensor


class VideoShardHooks(Protocol):
    """This rank's slice of one forward's video stream (built once per forward from the layout's segments)."""

    def mamba_block(self, block, hidden: Tensor) -> Tensor:
        """``block(hidden)`` for a ``Mamba2Block`` on the local slice [B, L, D], exact across ranks."""

    def cross_attention(self, q: Tensor, k: Tensor, v: Tensor, q_seg: Tensor | None, k_seg: Tensor | None,
                        scale: float, backend: str) -> Tensor:
        """Cross-attention of the replicated queries over every rank's keys: the I/O of
        ``vamba.models.attention.attention`` (non-causal), identical output on every rank."""


class ContextParallelHooks(Protocol):
    """A context-parallel group as the model sees it."""

    size: int
    rank: int

    def shard(self, segments: Tensor) -> VideoShardHooks:
        """segments: [B, L] sample id per local video slot (-1 padding) -> the hooks of this forward."""
