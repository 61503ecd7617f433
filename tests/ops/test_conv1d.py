"""Causal depthwise conv1d reference: nn.Conv1d equivalence, packed samples, conv state streaming."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vamba.ops import causal_conv1d, causal_conv1d_ref


def torch_conv(x, weight, bias):
    """nn.Conv1d semantics as mamba-ssm uses it: pad w-1 both sides, keep the first l outputs, SiLU."""
    d, w = weight.shape
    return F.silu(F.conv1d(x, weight[:, None], bias, padding=w - 1, groups=d)[..., : x.shape[-1]])


@pytest.mark.parametrize("l,w", [(1, 4), (3, 4), (17, 4), (9, 2)])
def test_matches_torch_conv1d_with_gradients(l, w):
    x = torch.randn(2, 6, l, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, w, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    out, ref = causal_conv1d_ref(x, weight, bias), torch_conv(x, weight, bias)
    torch.testing.assert_close(out, ref)
    gw = torch.randn_like(out)
    for a, e in zip(torch.autograd.grad((out * gw).sum(), (x, weight, bias)),
                    torch.autograd.grad((ref * gw).sum(), (x, weight, bias))):
        torch.testing.assert_close(a, e)


def test_seq_idx_equals_separate_runs():
    lengths = [5, 1, 2, 9]
    x = torch.randn(1, 6, sum(lengths), dtype=torch.float64)
    weight, bias = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    seq = torch.repeat_interleave(torch.arange(4, dtype=torch.int32), torch.tensor(lengths))[None]
    out = causal_conv1d_ref(x, weight, bias, seq_idx=seq)
    parts = [torch_conv(p, weight, bias) for p in x.split(lengths, dim=-1)]
    torch.testing.assert_close(out, torch.cat(parts, -1))


@pytest.mark.parametrize("pieces", [[1, 1, 1, 20], [2, 21], [10, 3, 10], [23]])
def test_streaming_with_state_equals_one_pass(pieces):
    x = torch.randn(2, 5, sum(pieces), dtype=torch.float64)
    weight, bias = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    # row 0 one sample; row 1 a boundary at 12 (inside some pieces, on the edge of others)
    seq = torch.tensor([[0] * 23, [0] * 12 + [1] * 11], dtype=torch.int32)
    full, full_state = causal_conv1d_ref(x, weight, bias, seq_idx=seq, return_final_state=True)
    state, outs, start = None, [], 0
    for size in pieces:
        sl = slice(start, start + size)
        out, state = causal_conv1d_ref(x[..., sl], weight, bias, seq_idx=seq[:, sl], initial_state=state,
                                       return_final_state=True)
        outs.append(out)
        start += size
    torch.testing.assert_close(torch.cat(outs, -1), full)
    torch.testing.assert_close(state, full_state)


def test_final_state_drops_inputs_of_earlier_samples():
    x = torch.arange(1.0, 6.0).view(1, 1, 5)
    seq = torch.tensor([[0, 0, 0, 0, 1]], dtype=torch.int32)
    _, state = causal_conv1d_ref(x, torch.ones(1, 4), seq_idx=seq, return_final_state=True)
    torch.testing.assert_close(state, torch.tensor([[[0.0, 0.0, 5.0]]]))


def test_bad_inputs_raise_clear_errors():
    x = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="weight shape"):
        causal_conv1d(x, torch.randn(3, 4))
    with pytest.raises(ValueError, match="initial_state shape"):
        causal_conv1d(x, torch.randn(4, 4), initial_state=torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d(x, torch.randn(4, 4), activation="gelu")
    with pytest.raises(RuntimeError, match="causal-conv1d"):
        causal_conv1d(x, torch.randn(4, 4), backend="fast")
