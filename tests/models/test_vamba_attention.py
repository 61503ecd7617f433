"""Attention backends against the reference: SDPA, the unpadded (varlen) path and the fused-kernel reference,
forward and backward."""
from __future__ import annotations

import pytest
import torch

from tests.models.vamba_tiny import segments
from vamba.models.attention import (
    attention,
    attention_ref,
    attention_ref_fused,
    attention_unpadded,
    resolve_backend,
    varlen_ref,
)

B, HQ, HKV, D = 3, 4, 2, 8


def _qkv(nq, nk, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, HQ, nq, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, HKV, nk, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, HKV, nk, D, generator=g, dtype=torch.float64)
    return [t.requires_grad_() for t in (q, k, v)]


# (name, causal, nq, nk, q segments per row, k segments per row)
CASES = [
    ("causal, no mask", True, 7, 7, None, None),
    ("causal, padded rows", True, 7, 7, [[7], [4], [2]], [[7], [4], [2]]),
    ("causal, packed rows", True, 7, 7, [[3, 4], [2, 2, 1], [7]], [[3, 4], [2, 2, 1], [7]]),
    ("cross, no mask", False, 5, 9, None, None),
    ("cross, padded video and text", False, 5, 9, [[5], [3], [4]], [[9], [6], [0]]),
    ("cross, packed with a text-only sample", False, 6, 9, [[2, 2, 2], [6], [3, 3]], [[4, 0, 5], [9], [2, 7]]),
    # a batch without any video (the model's dummy item, no key readable): every input must still get a
    # gradient, or ZeRO-2 ranks disagree on which gradients to reduce
    ("cross, no video in the batch", False, 5, 4, [[5], [3], [4]], [[0], [0], [0]]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("path", ["sdpa", "unpadded", "eager_fused"])
def test_backends_match_reference_forward_and_backward(case, path):
    _, causal, nq, nk, q_rows, k_rows = case
    q_seg = segments(q_rows, nq) if q_rows else None
    k_seg = segments(k_rows, nk) if k_rows else None
    q, k, v = _qkv(nq, nk)
    ref = attention_ref(q, k, v, causal=causal, q_seg=q_seg, k_seg=k_seg)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    if path in ("sdpa", "eager_fused"):  # eager_fused in float64: every rounding point is the identity
        out = attention(q, k, v, causal=causal, q_seg=q_seg, k_seg=k_seg, backend=path)
    else:
        out = attention_unpadded(q, k, v, causal=causal, q_seg=q_seg, k_seg=k_seg, kernel=varlen_ref)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    torch.testing.assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)
    if q_seg is not None:  # queries of padding or of a sample without keys read nothing
        has_key = (q_seg[:, :, None] == k_seg[:, None, :]).logical_and(k_seg[:, None, :] >= 0).any(-1)
        assert torch.all(out[~has_key] == 0) and torch.all(out[has_key].abs().sum(-1) > 0)


def test_fused_reference_rounds_d_from_the_rounded_output():
    """The error a FlashAttention-style backward carries and the eager one does not: keys sharing a large common
    component (here 3x their spread) make dQ a near-cancelling sum, and D = rowsum(dO * O) from the bf16 O
    leaves a residue times that component. Against float64 truth, eager_fused's dq error exceeds eager's
    clearly; the forward and dv (no D involved) stay at eager's error."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 64, 64, generator=g, dtype=torch.float64)
    k = 0.3 * torch.randn(2, 2, 512, 64, generator=g, dtype=torch.float64) + 3 * torch.randn(64, generator=g,
                                                                                         dtype=torch.float64)
    v = torch.randn(2, 2, 512, 64, generator=g, dtype=torch.float64)
    d_out = torch.randn(2, 64, 4, 64, generator=g, dtype=torch.float64)

    def run(fn, dtype):
        x = [t.to(dtype).requires_grad_() for t in (q, k, v)]
        out = fn(*x, causal=False)
        return [out, *torch.autograd.grad(out, x, d_out.to(dtype))]

    def err(a, b):
        return float((a.double() - b).abs().max() / b.abs().max())

    truth = run(attention_ref, torch.float64)
    eager = [err(a, t) for a, t in zip(run(attention_ref, torch.bfloat16), truth)]
    fused = [err(a, t) for a, t in zip(run(attention_ref_fused, torch.bfloat16), truth)]
    assert fused[1] > 1.5 * eager[1], (fused, eager)  # dq
    assert fused[0] == eager[0] and fused[3] < 1.5 * eager[3], (fused, eager)  # out, dv


def test_reference_matches_explicit_softmax_per_segment():
    q, k, v = _qkv(4, 6)
    q_seg, k_seg = segments([[2, 2]] * B, 4), segments([[3, 3]] * B, 6)
    out = attention_ref(q, k, v, causal=False, q_seg=q_seg, k_seg=k_seg)
    b, i = 1, 3  # query 3 (segment 1) of head 2 reads keys 3..5 only, through kv head 1
    kv = 2 // (HQ // HKV)
    scores = q[b, 2, i] @ k[b, kv, 3:6].T / D ** 0.5
    torch.testing.assert_close(out[b, i, 2], torch.softmax(scores, -1) @ v[b, kv, 3:6])


def test_causal_with_cache_offset():
    q, k, v = _qkv(2, 6)  # two new queries at the end of six keys
    out = attention(q, k, v, causal=True, backend="sdpa")
    full_q = torch.cat([torch.zeros(B, HQ, 4, D, dtype=q.dtype), q.detach()], dim=2)
    torch.testing.assert_close(out, attention_ref(full_q, k, v, causal=True)[:, 4:])


def test_backend_resolution():
    q = torch.zeros(1, 1, 1, 8)
    assert resolve_backend("auto", q, masked=True, has_cache=False) == "sdpa"  # CPU
    with pytest.raises(ValueError, match="unknown attention backend"):
        resolve_backend("flash", q, masked=False, has_cache=False)
    with pytest.raises((ValueError, ImportError), match="CUDA|flash-attn"):
        resolve_backend("flash_attention_2", q, masked=False, has_cache=False)
