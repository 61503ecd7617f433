"""Cross-attention across the ranks of a context-parallel group, exactly (docs/context_parallel.md).

The text queries q are replicated; rank r holds the keys/values of its video slice. Each rank attends to its own
keys and returns its partial output o_r with the log-sum-exp lse_r of its scores (per query and head); the exact
output is the split-KV (flash-decoding) combination

    O = sum_r exp(lse_r - LSE) o_r,   LSE = log sum_r exp(lse_r)

computed as one all-reduce of [exp(lse_r - m) o_r, exp(lse_r - m)] (m: the group's max lse, a constant for
autograd). A query that reads no key on a rank (its sample's video lies elsewhere, or a text-only sample) has
lse_r = -inf and weight 0; a query that reads no key anywhere gets a zero output, as ``vamba.models.attention``
gives it, with finite gradients.

Gradients (vamba.parallel.comm): q passes ``replicated_to_sharded`` (backward: mean over the group) and the
combine is a differentiable ``all_reduce_sum`` (backward: sum over the group), so keys/values get R times their
share and q exactly its gradient. Two ways to get (o_r, lse_r):
- ``partial_attention_ref``: explicit float32 (float64) scores; autograd differentiates lse_r too. The reference.
- ``partial_attention_fused``: PyTorch's fused SDPA kernels that return the log-sum-exp (flash on CPU, memory-
  efficient on CUDA), inside an autograd Function whose backward calls the kernels' own backward with the
  GLOBAL output and log-sum-exp (ring-attention style): since exp(s_j - LSE) is the global probability of local
  key j, that gives exactly this rank's share of the global gradient, with no [Nq, Nk] matrix kept. The kernel's
  backward reads those two in the exact form its own forward returned them (``backward_operands``).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from vamba.models.attention import allowed_mask
from vamba.parallel.comm import all_reduce_max_plain, all_reduce_plain, all_reduce_sum, replicated_to_sharded

_NEG_INF = float("-inf")


def _expand_kv(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    rep = q.shape[1] // k.shape[1]
    return (k, v) if rep == 1 else (k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1))


def partial_attention_ref(q: Tensor, k: Tensor, v: Tensor, q_seg: Tensor | None, k_seg: Tensor | None,
                          scale: float) -> tuple[Tensor, Tensor]:
    """Attention of q over these keys only, with its log-sum-exp.

    q: [B, Hq, Nq, d]; k, v: [B, Hkv, Nk, d]; q_seg [B, Nq] / k_seg [B, Nk] segment ids (both None: no mask).
    Returns o [B, Nq, Hq, d] (heads last, zero where a query reads no key) and lse [B, Hq, Nq] (-inf there),
    both in at least float32 and differentiable.
    """
    k, v = _expand_kv(q, k, v)
    acc = torch.promote_types(q.dtype, torch.float32)
    scores = torch.matmul(q.to(acc), k.to(acc).transpose(-1, -2)) * scale
    mask = allowed_mask(q_seg, k_seg, q.shape[-2], k.shape[-2], causal=False, device=q.device)
    empty = None
    if mask is not None:
        empty = ~mask.any(-1, keepdim=True)  # [B, 1, Nq, 1]
        scores = scores.masked_fill(~mask, _NEG_INF).masked_fill(empty, 0.0)  # finite rows, zeroed below
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse[..., None])
    if empty is not None:
        probs = probs.masked_fill(empty, 0.0)
        lse = lse.masked_fill(empty[..., 0], _NEG_INF)
    out = torch.matmul(probs, v.to(acc))
    return out.transpose(1, 2), lse


def _sdpa_with_lse(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, scale: float):
    """(out [B, H, Nq, d], lse [B, H, Nq], state for the backward) from PyTorch's fused kernels."""
    if q.is_cuda:
        out, lse, seed, offset = torch.ops.aten._scaled_dot_product_efficient_attention(
            q, k, v, bias, True, 0.0, False, scale=scale)
        return out, lse, (seed, offset)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=bias,
                                                                          scale=scale)
    return out, lse, None


def backward_operands(glob: Tensor, glob_lse: Tensor, kernel_out: Tensor,
                      kernel_lse: Tensor) -> tuple[Tensor, Tensor]:
    """The global output and log-sum-exp in the form the fused kernel's backward reads: that of its own forward.

    glob [B, H, Nq, d] and glob_lse [B, H, Nq] (any float dtype; +inf where a query reads nothing anywhere);
    kernel_out [B, H, Nq, d] and kernel_lse [B, H, Nq_lse >= Nq]: this rank's results of ``_sdpa_with_lse``.
    Returns (out, lse) with the dtypes, shapes and strides of (kernel_out, kernel_lse): out holds glob; lse holds
    glob_lse in its first Nq entries and the kernel's own values after them.

    Why both matter (PyTorch's memory-efficient CUDA kernel, the one used on CUDA; docs/context_parallel.md):
    - its forward stores the output as [B, Nq, H, d] (returned transposed), and its backward assumes that layout:
      it takes no stride for the query dimension of ``out`` (it uses H * d). In half precision (bf16/fp16, sm80+)
      the backward computes Delta = rowsum(dO * O) from ``out`` inside the kernel, so an output laid out
      [B, H, Nq, d] is read at the wrong places (past its end for most heads): Delta is garbage and dq and dk are
      NaN while dv (= P^T dO, no Delta) is right. In float32 PyTorch computes Delta itself from the strided
      tensors, which is why float32 passed (H200, 2026-12-02).
    - its log-sum-exp has Nq padded to a multiple of 32; the forward writes +inf in the padded entries and the
      backward reads them for the last block of queries (probability exp(s - lse)): they keep the kernel's
      values (+inf: probability 0), never a fill of ours.
    The CPU flash kernel stores the output [B, H, Nq, d] and its LSE [B, Nq, H]: following the kernel's own
    tensors serves both.
    """
    out = torch.empty_like(kernel_out).copy_(glob)
    lse = kernel_lse.clone()
    lse[..., : glob_lse.shape[-1]] = glob_lse
    return out, lse


def _sdpa_backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, out: Tensor, lse: Tensor,
                   state, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    if q.is_cuda:
        seed, offset = state
        dq, dk, dv, _ = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
            grad, q, k, v, bias, out, lse.contiguous(), seed, offset, 0.0, [True, True, True, False], False,
            scale=scale)
        return dq, dk, dv
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        grad, q, k, v, out, lse, 0.0, False, attn_mask=bias, scale=scale)


class _FusedPartialAttention(torch.autograd.Function):
    """Forward: this rank's (o_r, lse_r) from a fused kernel, then the exact combine over the group (no autograd
    inside). Backward: the kernel's backward with the global output and log-sum-exp gives this rank's share of
    dq, dk, dv; dq is summed over the group (replicated q), dk/dv are scaled by R (vamba.parallel.comm)."""

    @staticmethod
    def forward(ctx, q, k, v, bias_fwd, bias_bwd, empty, group, scale):  # type: ignore[override]
        # k, v [B, Hkv, Nk, d] are kept as they are (grouped-query heads expanded only while a kernel runs)
        ke, ve = _expand_kv(q, k, v)
        out, lse, state = _sdpa_with_lse(q, ke.contiguous(), ve.contiguous(), bias_fwd, scale)
        del ke, ve
        acc = torch.promote_types(q.dtype, torch.float32)
        lse_r = lse[..., : q.shape[-2]].to(acc).masked_fill(empty, _NEG_INF)  # [B, H, Nq]
        m = all_reduce_max_plain(lse_r, group)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        w = torch.exp(lse_r - m)
        packed = all_reduce_plain(torch.cat([out.to(acc) * w[..., None], w[..., None]], dim=-1), group)
        num, den = packed[..., :-1], packed[..., -1]
        read = den > 0
        glob = torch.where(read[..., None], num / torch.where(read, den, torch.ones_like(den))[..., None],
                           torch.zeros_like(num))
        # +inf where nothing is read anywhere: every probability exp(s - lse) is then 0 in the backward
        glob_lse = torch.where(read, m + torch.log(torch.where(read, den, torch.ones_like(den))),
                               torch.full_like(m, float("inf")))
        glob, glob_lse = backward_operands(glob, glob_lse, out, lse)
        ctx.save_for_backward(q, k, v, bias_bwd, glob, glob_lse)
        ctx.state, ctx.group, ctx.scale = state, group, scale
        return glob

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        q, k, v, bias, glob, glob_lse = ctx.saved_tensors
        ke, ve = _expand_kv(q, k, v)
        dq, dk, dv = _sdpa_backward(grad.contiguous(), q, ke.contiguous(), ve.contiguous(), bias, glob, glob_lse,
                                    ctx.state, ctx.scale)
        del ke, ve
        b, hkv, nk, d = k.shape
        rep = q.shape[1] // hkv
        if rep > 1:  # a shared key/value head's gradient sums over its query heads
            dk, dv = dk.view(b, hkv, rep, nk, d).sum(2), dv.view(b, hkv, rep, nk, d).sum(2)
        dq = all_reduce_plain(dq, ctx.group)
        r = dist.get_world_size(ctx.group)
        return dq, dk * r, dv * r, None, None, None, None, None


def _bias(allowed: Tensor, b: int, h: int, nk: int, dtype: torch.dtype) -> Tensor:
    """Additive bias [B, H, Nq, Nk] (0 allowed, -inf not), broadcast over heads, last dim stored padded to a
    multiple of 16 (the memory-efficient CUDA kernel needs aligned rows)."""
    nq = allowed.shape[-2]
    stored = torch.zeros(*allowed.shape[:-1], -(-nk // 16) * 16, dtype=dtype, device=allowed.device)
    stored[..., :nk].masked_fill_(~allowed, _NEG_INF)
    return stored[..., :nk].expand(b, h, nq, nk)


def partial_attention_fused(q: Tensor, k: Tensor, v: Tensor, q_seg: Tensor | None, k_seg: Tensor | None,
                            scale: float, group) -> Tensor:
    """The combined cross-attention output [B, Nq, Hq, d] through fused kernels (module docstring)."""
    mask = allowed_mask(q_seg, k_seg, q.shape[-2], k.shape[-2], causal=False, device=q.device)
    b, h, nq, nk = q.shape[0], q.shape[1], q.shape[-2], k.shape[-2]
    if mask is None:
        bias_fwd = bias_bwd = None
        empty = torch.zeros(b, h, nq, dtype=torch.bool, device=q.device)
    else:
        none_here = ~mask.any(-1, keepdim=True)  # [B, 1, Nq, 1]
        # forward: a query that reads nothing here reads everything (a finite output, discarded: weight 0);
        # backward: the true mask, so that keys it may not read get probability exp(-inf) = 0
        bias_fwd = _bias(mask | none_here, b, h, nk, q.dtype)
        bias_bwd = _bias(mask, b, h, nk, q.dtype)
        empty = none_here[..., 0].expand(b, h, nq)
    out = _FusedPartialAttention.apply(q.contiguous(), k.contiguous(), v.contiguous(), bias_fwd, bias_bwd, empty,
                                       group, scale)
    return out.transpose(1, 2)


def cross_attention(q: Tensor, k: Tensor, v: Tensor, q_seg: Tensor | None, k_seg: Tensor | None, scale: float,
                    group, fused: bool = False) -> Tensor:
    """Exact cross-attention of replicated queries over keys/values sharded across ``group``.

    Same I/O as ``vamba.models.attention.attention`` (non-causal): q [B, Hq, Nq, d], k/v [B, Hkv, Nk_local, d],
    segment ids or None; returns [B, Nq, Hq, d] in q's dtype, identical on every rank.
    """
    if fused:
        return partial_attention_fused(q, k, v, q_seg, k_seg, scale, group)
    q = replicated_to_sharded(q, group)
    out, lse = partial_attention_ref(q, k, v, q_seg, k_seg, scale)  # [B, Nq, H, d], [B, H, Nq]
    m = all_reduce_max_plain(lse.detach(), group)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w = torch.exp(lse - m).transpose(1, 2)[..., None]  # [B, Nq, H, 1], 0 where nothing is read here
    packed = all_reduce_sum(torch.cat([out * w, w], dim=-1), group)
    num, den = packed[..., :-1], packed[..., -1:]
    read = den > 0
    out = torch.where(read, num / torch.where(read, den, torch.ones_like(den)), torch.zeros_like(num))
    return out.to(q.dtype)
