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


def _staged(x: Tensor, group) -> Tensor:
    """x where the backend can take it; a host copy for CUDA tensors on gloo (which all-gathers host memory only:
    two processes sharing one GPU, as the GPU benchmark runs, cannot use NCCL)."""
    return x.cpu() if x.is_cuda and dist.get_backend(group) == "gloo" else x


def _gather(x: Tensor, group) -> Tensor:
    """[R, ...] all-gather of x (contiguous), on x's device."""
    y = _staged(x.contiguous(), group)
    out = [torch.empty_like(y) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, y, group=group)
    return torch.stack(out).to(x.device)


def _reduce(x: Tensor, group, op=dist.ReduceOp.SUM) -> Tensor:
    """All-reduce of a copy of x, on x's device."""
    y = _staged(x.contiguous(), group)
    y = y.clone() if y is x else y
    dist.all_reduce(y, op=op, group=group)
    return y.to(x.device)


class _AllGatherStack(torch.autograd.Function):
    """x [...] on every rank -> [R, ...] (slot r = rank r's x); backward: slot gradients summed over the group."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:  # type: ignore[override]
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        return _gather(x, group)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        # NOTE: an all-reduce of the (small) stacked gradient, then the own slot: a reduce-scatter in effect,
        # and it runs on every backend (gloo has no reduce-scatter).
        return _reduce(grad, ctx.group)[ctx.rank], None


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:  # type: ignore[override]
        ctx.group = group
        return _reduce(x, group)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return _reduce(grad, ctx.group), None


class _ReplicatedToSharded(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:  # type: ignore[override]
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return _reduce(grad, ctx.group) / dist.get_world_size(ctx.group), None


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
    return _gather(x, group)


@torch.no_grad()
def all_reduce_max_plain(x: Tensor, group) -> Tensor:
    return _reduce(x, group, dist.ReduceOp.MAX)


@torch.no_grad()
def all_reduce_plain(x: Tensor, group) -> Tensor:
    """Sum over the group without autograd (inside autograd Functions that define their own backward)."""
    return _reduce(x, group)
