"""Cross-attention across the ranks of a context-parallel group, exactly (docs/context_parallel.md).

The text queries q are replicated; rank r holds the keys/values of its video slice. Each rank attends to its own
keys and returns its partial output o_r with the log-sum-exp lse_r of its scores (per query and head); the exact
output is the split-KV (flash-decoding) combination

    O = sum_r exp(lse_r - LSE) o_r,   LSE = log sum_r exp(lse_r)

computed as sums of [exp(lse_r - m) o_r, exp(lse_r - m)] (m: the group's max lse, a constant for autograd). A
query that reads no key on a slice (its sample's video lies elsewhere, or a text-only sample) has lse_r = -inf
and weight 0; a query that reads no key anywhere gets a zero output, as ``vamba.models.attention`` gives it, with
finite gradients.

As vamba.parallel.mamba, the module is pure math on tensors first (no process group: one process can run a
whole sequence cut into slices and compare it with attention over the whole sequence, tests/parallel/
test_attention_combine.py, and tests/gpu/ through the CUDA kernel), then the binding ``cross_attention``, which
runs the same functions on one rank with the group's collectives between them.

Pure functions:
- ``partial_attention_ref``: one slice's (o_r, lse_r) from explicit float32 (float64) scores; autograd
  differentiates lse_r too. The reference.
- ``partial_attention_kernel`` / ``partial_attention_kernel_backward``: the same through PyTorch's fused SDPA
  kernels that return the log-sum-exp (flash on CPU, memory-efficient on CUDA). The backward is the kernel's own,
  called with the GLOBAL output and log-sum-exp (ring-attention style): since exp(s_j - LSE) is the global
  probability of local key j, that gives exactly this slice's share of the global gradient, with no [Nq, Nk]
  matrix kept. The kernel's backward reads those two in the exact form its own forward returned them
  (``backward_operands``).
- ``stable_offset``, ``lse_weights``, ``normalize``: the steps of the log-sum-exp merge around the two sums;
  ``merge_partials``: the whole merge over a list of slices in one process.

Gradients across ranks (vamba.parallel.comm): q passes ``replicated_to_sharded`` (backward: mean over the group)
and the combine is a differentiable ``all_reduce_sum`` (backward: sum over the group), so keys/values get R
times their share and q exactly its gradient.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from vamba.models.attention import allowed_mask
from vamba.parallel.comm import all_reduce_max_plain, all_reduce_plain, all_reduce_sum, replicated_to_sharded

_NEG_INF = float("-inf")


# -- pure: the merge -----------------------------------------------------------------------------------------
def stable_offset(m: Tensor) -> Tensor:
    """The max over slices of lse [B, H, Nq] made finite (0 where no slice reads anything): the offset m."""
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def lse_weights(lse: Tensor, m: Tensor) -> Tensor:
    """exp(lse_r - m) [B, H, Nq]: this slice's unnormalised weight, 0 where it reads nothing (lse_r = -inf)."""
    return torch.exp(lse - m)


def normalize(num: Tensor, den: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """The merged output and log-sum-exp from the sums over slices.

    num [B, H, Nq, d] = sum_r w_r o_r, den [B, H, Nq] = sum_r w_r (w_r = ``lse_weights``), m the offset.
    Returns (O [B, H, Nq, d], LSE [B, H, Nq]): O = 0 and LSE = +inf where no slice reads anything (+inf: every
    probability exp(s - LSE) is then 0 in the kernel's backward).
    """
    read = den > 0
    safe = torch.where(read, den, torch.ones_like(den))
    out = torch.where(read[..., None], num / safe[..., None], torch.zeros_like(num))
    lse = torch.where(read, m + torch.log(safe), torch.full_like(m, float("inf")))
    return out, lse


def merge_partials(outs: Sequence[Tensor], lses: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """The log-sum-exp merge of every slice's partial attention, in one process (differentiable).

    outs: each slice's o_r [B, H, Nq, d]; lses: its lse_r [B, H, Nq] (-inf where it reads nothing).
    Returns (O, LSE) as ``normalize``: attention over all slices' keys at once.
    """
    m = stable_offset(torch.stack([lse.detach() for lse in lses]).amax(0))
    weights = [lse_weights(lse, m) for lse in lses]
    num = sum(o.to(w.dtype) * w[..., None] for o, w in zip(outs, weights))
    return normalize(num, sum(weights), m)


# -- pure: one slice's partial attention ---------------------------------------------------------------------
def expand_kv(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """k, v [B, Hkv, Nk, d] repeated to q's Hq heads (grouped-query attention)."""
    rep = q.shape[1] // k.shape[1]
    return (k, v) if rep == 1 else (k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1))


def partial_attention_ref(q: Tensor, k: Tensor, v: Tensor, q_seg: Tensor | None, k_seg: Tensor | None,
                          scale: float) -> tuple[Tensor, Tensor]:
    """Attention of q over these keys only, with its log-sum-exp.

    q: [B, Hq, Nq, d]; k, v: [B, Hkv, Nk, d]; q_seg [B, Nq] / k_seg [B, Nk] segment ids (both None: no mask).
    Returns o [B, Hq, Nq, d] (zero where a query reads no key) and lse [B, Hq, Nq] (-inf there), both in at
    least float32 and differentiable.
    """
    k, v = expand_kv(q, k, v)
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
    return torch.matmul(probs, v.to(acc)), lse


def _bias(allowed: Tensor, b: int, h: int, nk: int, dtype: torch.dtype) -> Tensor:
    """Additive bias [B, H, Nq, Nk] (0 allowed, -inf not), broadcast over heads, last dim stored padded to a
    multiple of 16 (the memory-efficient CUDA kernel needs aligned rows)."""
    nq = allowed.shape[-2]
    stored = torch.zeros(*allowed.shape[:-1], -(-nk // 16) * 16, dtype=dtype, device=allowed.device)
    stored[..., :nk].masked_fill_(~allowed, _NEG_INF)
    return stored[..., :nk].expand(b, h, nq, nk)


@dataclass
class KernelPartial:
    """One slice's fused-kernel forward: ``lse`` [B, H, Nq] is lse_r for the merge (-inf where the slice reads
    nothing, at least float32); ``kernel_out`` / ``kernel_lse`` are the kernel's own results (its layout and
    padding, for ``backward_operands``; kernel_out is a finite output where lse is -inf, with weight 0);
    ``bias`` the true mask for the backward and ``state`` the kernel's random state."""

    lse: Tensor
    kernel_out: Tensor
    kernel_lse: Tensor
    bias: Tensor | None
    state: tuple[Tensor, Tensor] | None


def partial_attention_kernel(q: Tensor, k: Tensor, v: Tensor, q_seg: Tensor | None, k_seg: Tensor | None,
                             scale: float) -> KernelPartial:
    """``partial_attention_ref`` through PyTorch's fused kernels, without autograd: q [B, H, Nq, d], k, v
    [B, Hkv, Nk, d] (contiguous), segment ids or None. The output o_r is ``kernel_out`` [B, H, Nq, d]."""
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
    # k, v are kept as they are by the caller (grouped-query heads expanded only while a kernel runs)
    ke, ve = expand_kv(q, k, v)
    ke, ve = ke.contiguous(), ve.contiguous()
    if q.is_cuda:
        out, lse, seed, offset = torch.ops.aten._scaled_dot_product_efficient_attention(
            q, ke, ve, bias_fwd, True, 0.0, False, scale=scale)
        state = (seed, offset)
    else:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, ke, ve, 0.0, False,
                                                                              attn_mask=bias_fwd, scale=scale)
        state = None
    acc = torch.promote_types(q.dtype, torch.float32)
    lse_r = lse[..., :nq].to(acc).masked_fill(empty, _NEG_INF)
    return KernelPartial(lse_r, out, lse, bias_bwd, state)


def backward_operands(glob: Tensor, glob_lse: Tensor, kernel_out: Tensor,
                      kernel_lse: Tensor) -> tuple[Tensor, Tensor]:
    """The global output and log-sum-exp in the form the fused kernel's backward reads: that of its own forward.

    glob [B, H, Nq, d] and glob_lse [B, H, Nq] (any float dtype; +inf where a query reads nothing anywhere);
    kernel_out [B, H, Nq, d] and kernel_lse [B, H, Nq_lse >= Nq]: this slice's ``KernelPartial``.
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


def partial_attention_kernel_backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None,
                                      out: Tensor, lse: Tensor, state, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """This slice's share of (dq, dk, dv) of the merged attention: the kernel's backward with the global output
    and log-sum-exp (out, lse from ``backward_operands``). grad [B, H, Nq, d] is the merged output's gradient;
    bias and state come from the slice's ``KernelPartial``. Returns dq [B, H, Nq, d] and dk, dv [B, Hkv, Nk, d]
    (a shared key/value head's gradient summed over its query heads). Summed over slices, dq is the whole
    gradient; dk, dv of each slice are exactly those of its keys."""
    ke, ve = expand_kv(q, k, v)
    ke, ve, grad = ke.contiguous(), ve.contiguous(), grad.contiguous()
    if q.is_cuda:
        seed, offset = state
        dq, dk, dv, _ = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
            grad, q, ke, ve, bias, out, lse.contiguous(), seed, offset, 0.0, [True, True, True, False], False,
            scale=scale)
    else:
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad, q, ke, ve, out, lse, 0.0, False, attn_mask=bias, scale=scale)
    del ke, ve
    b, hkv, nk, d = k.shape
    rep = q.shape[1] // hkv
    if rep > 1:
        dk, dv = dk.view(b, hkv, rep, nk, d).sum(2), dv.view(b, hkv, rep, nk, d).sum(2)
    return dq, dk, dv


# -- the binding: one rank of a group ------------------------------------------------------------------------
class _FusedCrossAttention(torch.autograd.Function):
    """Forward: this rank's ``partial_attention_kernel``, then the merge over the group (no autograd inside).
    Backward: ``partial_attention_kernel_backward`` gives this rank's share of dq, dk, dv; dq is summed over the
    group (replicated q), dk/dv are scaled by R (vamba.parallel.comm)."""

    @staticmethod
    def forward(ctx, q, k, v, q_seg, k_seg, group, scale):  # type: ignore[override]
        part = partial_attention_kernel(q, k, v, q_seg, k_seg, scale)
        m = stable_offset(all_reduce_max_plain(part.lse, group))
        w = lse_weights(part.lse, m)
        packed = all_reduce_plain(torch.cat([part.kernel_out.to(w.dtype) * w[..., None], w[..., None]], dim=-1),
                                  group)
        glob, glob_lse = normalize(packed[..., :-1], packed[..., -1], m)
        out_b, lse_b = backward_operands(glob, glob_lse, part.kernel_out, part.kernel_lse)
        ctx.save_for_backward(q, k, v, part.bias, out_b, lse_b)
        ctx.state, ctx.group, ctx.scale = part.state, group, scale
        return out_b  # in q's dtype (the kernel's output)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        q, k, v, bias, out, lse = ctx.saved_tensors
        dq, dk, dv = partial_attention_kernel_backward(grad, q, k, v, bias, out, lse, ctx.state, ctx.scale)
        dq = all_reduce_plain(dq, ctx.group)
        r = dist.get_world_size(ctx.group)
        return dq, dk * r, dv * r, None, None, None, None


def cross_attention(q: Tensor, k: Tensor, v: Tensor, q_seg: Tensor | None, k_seg: Tensor | None, scale: float,
                    group, fused: bool = False) -> Tensor:
    """Exact cross-attention of replicated queries over keys/values sharded across ``group``.

    Same I/O as ``vamba.models.attention.attention`` (non-causal): q [B, Hq, Nq, d], k/v [B, Hkv, Nk_local, d],
    segment ids or None; returns [B, Nq, Hq, d] in q's dtype, identical on every rank. ``fused``: through the
    fused kernels, else the reference (explicit scores, autograd through the merge).
    """
    if fused:
        out = _FusedCrossAttention.apply(q.contiguous(), k.contiguous(), v.contiguous(), q_seg, k_seg, group, scale)
        return out.transpose(1, 2)
    q = replicated_to_sharded(q, group)
    out, lse = partial_attention_ref(q, k, v, q_seg, k_seg, scale)  # [B, H, Nq, d], [B, H, Nq]
    m = stable_offset(all_reduce_max_plain(lse.detach(), group))
    w = lse_weights(lse, m)[..., None]
    packed = all_reduce_sum(torch.cat([out * w, w], dim=-1), group)
    out, _ = normalize(packed[..., :-1], packed[..., -1], m)
    return out.transpose(1, 2).to(q.dtype)
