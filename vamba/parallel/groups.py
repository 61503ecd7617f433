"""Process groups of context parallelism: the ranks form a (data-parallel x context-parallel) mesh.

Rank ``g * C + c`` is CP rank ``c`` of CP group ``g`` (= data-parallel rank ``g``), C = the CP size: the ranks of a
CP group are consecutive (one node's GPUs first), the layout accelerate's own device meshes use for their
``cp`` dimension. A CP group trains on one batch: the same text on every rank, the video cut in time.

Data parallelism needs no group of its own: by the gradient convention of ``vamba.parallel.comm`` the mean over a
CP group of each rank's gradient is that group's exact gradient, so the usual all-rank average of DDP or
DeepSpeed (over CP x DP ranks) is the average over data-parallel groups (docs/context_parallel.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist
from torch import Tensor

from vamba.parallel.shard import VideoShard
from vamba.utils.distributed import register_subgroup


@dataclass
class ContextParallel:
    """This rank's place in the mesh; implements ``vamba.models.sharding.ContextParallelHooks``."""

    group: object  # torch.distributed ProcessGroup of this rank's CP group
    rank: int  # within the CP group
    size: int  # CP degree
    dp_rank: int  # index of the CP group = data-parallel rank
    dp_size: int

    def shard(self, segments: Tensor) -> VideoShard:
        return VideoShard(segments, self.group, self.rank, self.size)


def init_context_parallel(size: int) -> ContextParallel:
    """Split the default process group (already initialised: torchrun) into CP groups of ``size`` consecutive
    ranks. Every rank must call this (``new_group`` is collective)."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("context parallelism needs torch.distributed initialised (launch with torchrun)")
    world, rank = dist.get_world_size(), dist.get_rank()
    if size < 1 or world % size:
        raise ValueError(f"parallel.context_parallel_size={size} must divide the world size {world}")
    groups = [dist.new_group(list(range(g * size, (g + 1) * size))) for g in range(world // size)]
    register_subgroup(groups[rank // size])  # drained at the end of the run (vamba.utils.distributed)
    return ContextParallel(groups[rank // size], rank % size, size, rank // size, world // size)
