"""Shards: grouped by video, deterministic, balanced by question count, covering everything once."""
from __future__ import annotations

import pytest

from vamba.evaluation.sharding import group_by, shard


def test_group_by_keeps_first_appearance_order() -> None:
    items = ["a1", "b1", "a2", "c1", "b2"]
    assert group_by(items, lambda s: s[0]) == [["a1", "a2"], ["b1", "b2"], ["c1"]]


def test_shards_partition_and_balance() -> None:
    groups = [[f"v{i}q{j}" for j in range(size)] for i, size in enumerate([5, 1, 1, 3, 2, 2, 1])]
    shards = [shard(groups, r, 3) for r in range(3)]
    flat = [q for s in shards for g in s for q in g]
    assert sorted(flat) == sorted(q for g in groups for q in g)  # every question exactly once
    loads = [sum(map(len, s)) for s in shards]
    assert loads == [5, 5, 5]  # largest first onto the least-loaded rank
    assert shards == [shard(groups, r, 3) for r in range(3)]  # deterministic
    assert shard(groups, 0, 1) == groups  # one rank keeps the original order
    with pytest.raises(ValueError, match="outside world size"):
        shard(groups, 3, 3)
