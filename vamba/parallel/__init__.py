"""Video-sequence (context) parallelism: one batch's video cut along time over a group of ranks, exactly.

``groups`` (the CP x DP mesh, ``init_context_parallel``), ``shard`` (one forward's ``VideoShard``: the hooks the
model calls, vamba.models.sharding), ``mamba`` (Mamba-2 state passing), ``attention`` (the cross-attention
log-sum-exp combine), ``comm`` (collectives and the gradient convention). ``mamba`` and ``attention`` are pure math
on tensors (no process group; tested in one process against the whole sequence) followed by a thin binding that
runs it on one rank with the collectives in between. See docs/context_parallel.md.
"""
from vamba.parallel.groups import ContextParallel, init_context_parallel

__all__ = ["ContextParallel", "init_context_parallel"]
