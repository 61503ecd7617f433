"""Data-parallel evaluation: split questions across ranks so that each video lives on one rank.

Keeping a video's questions together means each video is decoded and encoded once in the whole run.
The split is deterministic (same questions, same world size -> same shards) and balanced by question
count: groups are placed largest first on the least-loaded rank (ties -> lowest rank).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")


def group_by(items: Sequence[T], key: Callable[[T], Hashable]) -> list[list[T]]:
    """Groups of equal ``key`` in order of first appearance, items in their original order."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.values())


def shard(groups: Sequence[Sequence[T]], rank: int, world_size: int) -> list[list[T]]:
    """The groups rank ``rank`` of ``world_size`` evaluates, in their original order."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    load = [0] * world_size
    owner = [0] * len(groups)
    for i in sorted(range(len(groups)), key=lambda i: (-len(groups[i]), i)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += len(groups[i])
    return [list(g) for i, g in enumerate(groups) if owner[i] == rank]


def dist_env() -> tuple[int, int]:
    """(rank, world size) from the torchrun / SLURM-style environment, (0, 1) without one."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    return rank, world
