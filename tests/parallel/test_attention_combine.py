"""The cross-attention combine of context parallelism as pure functions (vamba.parallel.attention), in one process.

A sequence's keys are cut into slices; each slice's partial attention and log-sum-exp are merged
(``merge_partials``) and compared with attention over the whole sequence (``vamba.models.attention.attention_ref``),
forward and backward: through the reference partials (float64, autograd through the merge) and through PyTorch's
fused kernel (the CPU flash kernel here; tests/gpu/test_context_parallel_gpu.py runs ``kernel_combine_errors`` on
the CUDA memory-efficient kernel), whose backward is called per slice with the merged output and log-sum-exp.
These are the functions the training path runs on each rank (``cross_attention``, with collectives between them;
tests/parallel/test_context_parallel.py checks that binding across real processes).
"""
from __future__ import annotations

import pytest
import torch

from vamba.models.attention import attention_ref
from vamba.parallel.attention import (
    backward_operands,
    merge_partials,
    partial_attention_kernel,
    partial_attention_kernel_backward,
    partial_attention_ref,
)


def segments(nq: int, nk: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two packed samples, the second's video starting in the second slice, a text-only sample (reads nothing
    anywhere) and padding keys."""
    q_seg = torch.zeros(1, nq, dtype=torch.long, device=device)
    q_seg[:, nq // 2:] = 1
    q_seg[:, -3:] = 2
    k_seg = torch.zeros(1, nk, dtype=torch.long, device=device)
    k_seg[:, nk // 3:] = 1
    k_seg[:, -5:] = -1
    return q_seg, k_seg


def _cut(t: torch.Tensor | None, a: int, b: int, dim: int) -> torch.Tensor | None:
    return None if t is None else t.narrow(dim, a, b - a)


def sliced_kernel_attention(q, k, v, q_seg, k_seg, scale: float, bounds: list[int], grad: torch.Tensor):
    """Attention of q over k/v cut at ``bounds`` through the fused kernel, merged, and its backward per slice with
    the merged output and log-sum-exp, as each rank runs it. q [B, H, Nq, d], k/v [B, Hkv, Nk, d], grad [B, H, Nq,
    d] the output's gradient. Returns (out [B, H, Nq, d], dq, dk, dv) in float32."""
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        ks, vs = k[:, :, a:b].contiguous(), v[:, :, a:b].contiguous()
        parts.append((ks, vs, partial_attention_kernel(q, ks, vs, q_seg, _cut(k_seg, a, b, 1), scale)))
    out, lse = merge_partials([p.kernel_out for _, _, p in parts], [p.lse for _, _, p in parts])
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    dks, dvs = [], []
    for ks, vs, p in parts:
        out_b, lse_b = backward_operands(out, lse, p.kernel_out, p.kernel_lse)
        dqi, dki, dvi = partial_attention_kernel_backward(grad.to(q.dtype), q, ks, vs, p.bias, out_b, lse_b,
                                                          p.state, scale)
        dq += dqi.float()
        dks.append(dki.float())
        dvs.append(dvi.float())
    return out.float(), dq, torch.cat(dks, 2), torch.cat(dvs, 2)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def kernel_combine_errors(device: torch.device, dtype: torch.dtype, masked: bool, nq: int, nk: int, heads: int,
                          kv_heads: int, d: int, cuts: list[int]) -> dict[str, float]:
    """Relative errors of the sliced fused-kernel combine (``sliced_kernel_attention``) against attention over the
    whole sequence in float32 with autograd, for the output and the gradients of q, k and v (NaN when not
    finite: it fails every bound)."""
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, heads, nq, d, generator=g).to(device, dtype)
    k = torch.randn(1, kv_heads, nk, d, generator=g).to(device, dtype)
    v = torch.randn(1, kv_heads, nk, d, generator=g).to(device, dtype)
    grad = torch.randn(1, heads, nq, d, generator=g).to(device)
    q_seg, k_seg = segments(nq, nk, device) if masked else (None, None)
    scale = d ** -0.5
    leaves = [t.float().requires_grad_(True) for t in (q, k, v)]
    one = attention_ref(*leaves, causal=False, q_seg=q_seg, k_seg=k_seg, scale=scale).transpose(1, 2)
    g_one = torch.autograd.grad((one * grad).sum(), leaves)
    got = sliced_kernel_attention(q, k, v, q_seg, k_seg, scale, [0, *cuts, nk], grad)
    return {name: rel(a, b) if a.isfinite().all() else float("nan")
            for name, a, b in zip(("out", "q", "k", "v"), got, (one, *g_one))}


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2)])
def test_merged_reference_partials_equal_whole_attention(masked: bool, heads: int, kv_heads: int) -> None:
    """float64, autograd through the partials and the merge: forward and the gradients of q, k and v."""
    g = torch.Generator().manual_seed(0)
    nq, nk, d = 11, 40, 8
    leaves = [torch.randn(2, h, n, d, generator=g, dtype=torch.float64).requires_grad_(True)
              for h, n in ((heads, nq), (kv_heads, nk), (kv_heads, nk))]
    q, k, v = leaves
    q_seg, k_seg = segments(nq, nk, "cpu") if masked else (None, None)
    if masked:
        q_seg, k_seg = q_seg.expand(2, nq), k_seg.expand(2, nk)
    cotangent = torch.randn(2, nq, heads, d, generator=g, dtype=torch.float64)
    scale = 0.3
    whole = attention_ref(q, k, v, causal=False, q_seg=q_seg, k_seg=k_seg, scale=scale)
    g_whole = torch.autograd.grad((whole * cotangent).sum(), leaves)
    bounds = [0, 7, 13, 30, nk]  # the second sample's keys start in the third slice; the last holds the padding
    parts = [partial_attention_ref(q, k[:, :, a:b], v[:, :, a:b], q_seg, _cut(k_seg, a, b, 1), scale)
             for a, b in zip(bounds[:-1], bounds[1:])]
    merged, lse = merge_partials([o for o, _ in parts], [l for _, l in parts])
    merged = merged.transpose(1, 2)
    torch.testing.assert_close(merged, whole, rtol=1e-12, atol=1e-12)
    g_merged = torch.autograd.grad((merged * cotangent).sum(), leaves)
    for name, a, b in zip("qkv", g_merged, g_whole):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12, msg=name)
    if masked:  # the text-only sample reads nothing anywhere: zero output, +inf log-sum-exp, finite gradients
        assert (merged[:, -3:] == 0).all() and (lse[:, :, -3:] == float("inf")).all()
        assert all(t.isfinite().all() for t in g_merged)


@pytest.mark.parametrize("masked", [False, True])
def test_sliced_kernel_combine_on_cpu(masked: bool) -> None:
    """The CPU flash kernel: float32 to 1e-5, bfloat16 (training's dtype) finite and within 1e-2 / 2e-2."""
    sizes = dict(nq=24, nk=300, heads=4, kv_heads=2, d=16, cuts=[150])
    fp32 = kernel_combine_errors(torch.device("cpu"), torch.float32, masked, **sizes)
    assert all(e < 1e-5 for e in fp32.values()), fp32
    bf16 = kernel_combine_errors(torch.device("cpu"), torch.bfloat16, masked, **sizes)
    assert bf16["out"] < 1e-2 and all(bf16[n] < 2e-2 for n in "qkv"), bf16
