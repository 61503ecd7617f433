"""Collectives of the context-parallel (CP) group, with the backward the design needs (docs/context_parallel.md).

Gradient convention (one rule for every parameter): the text stream is replicated on the ranks of a CP group,
the video stream is sharded. Each rank's backward gives every parameter R times its own share of the gradient
for the sharded part (R = the CP size) and the whole gradient for the replicated part, so that the MEAN over the
CP group of each parameter's gradient is exactly the single-process gradient. A data-parallel engine that
averages over all ranks (CP x DP: DDP, DeepSpeed ZeRO) therefore needs no CP-specific reduction.

Two functions make that rule hold:
- ``all_reduce_sum``: forward sums over the group; backward sums the output gradients over the group. Used
  where sharded partial results become a replicated one (the cross-attention combine): the replicated output
  gradient is identical on every rank, so each local branch receives R times it.
- ``replicated_to_sharded``: forward identity; backward averages over the group. Applied to a replicated
  tensor (the text queries) before it meets sharded data: each rank's gradient for it is R times its branch's
  share, and the mean is the sum of the branches' shares, identical on every rank again.
``all_gather_stack`` (small per-rank summaries: Mamba-2 states, conv tails) is consistent with the same rule: its
backward sums over the group the gradients every rank computed for a slot and hands the sum to the slot's owner.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


class _AllGatherStack(torch.autograd.Function):
    """x [...] on every rank -> [R, ...] (slot r = rank r's x); backward: slot gradients summed over the group."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:  # type: ignore[override]
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        x = x.contiguous()
        out = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(out, x, group=group)
        return torch.stack(out)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        # NOTE: an all-reduce of the (small) stacked gradient, then the own slot: a reduce-scatter in effect,
        # and it runs on every backend (gloo has no reduce-scatter).
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.rank], None


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:  # type: ignore[override]
        ctx.group = group
        out = x.contiguous().clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _ReplicatedToSharded(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:  # type: ignore[override]
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad / dist.get_world_size(ctx.group), None


def all_gather_stack(x: Tensor, group) -> Tensor:
    """Differentiable all-gather: [...] -> [R, ...]. Every rank must use the result in its graph (even with zero
    weight) so that every rank runs the backward collective."""
    return _AllGatherStack.apply(x, group)


def all_reduce_sum(x: Tensor, group) -> Tensor:
    """Differentiable sum over the group (backward: the output gradients summed over the group)."""
    return _AllReduceSum.apply(x, group)


def replicated_to_sharded(x: Tensor, group) -> Tensor:
    """Identity forward; backward averages the gradient over the group (module docstring)."""
    return _ReplicatedToSharded.apply(x, group)


@torch.no_grad()
def all_gather_plain(x: Tensor, group) -> Tensor:
    """All-gather without autograd (integer metadata): [...] -> [R, ...]."""
    out = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, x.contiguous(), group=group)
    return torch.stack(out)


@torch.no_grad()
def all_reduce_max_plain(x: Tensor, group) -> Tensor:
    out = x.contiguous().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX, group=group)
    return out
