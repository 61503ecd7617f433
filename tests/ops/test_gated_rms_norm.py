"""Gated RMSNorm reference against the formula written out per group."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vamba.ops import gated_rms_norm, gated_rms_norm_ref


@pytest.mark.parametrize("norm_before_gate", [False, True])
@pytest.mark.parametrize("group_size", [None, 4])
def test_matches_formula(norm_before_gate, group_size):
    x, z = torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(2, 3, 8, dtype=torch.float64)
    w = torch.randn(8, dtype=torch.float64)
    out = gated_rms_norm_ref(x, w, z, eps=1e-5, group_size=group_size, norm_before_gate=norm_before_gate)
    gs = group_size or 8
    h = x if norm_before_gate else x * F.silu(z)
    parts = [p / torch.sqrt(p.pow(2).mean(-1, keepdim=True) + 1e-5) for p in h.split(gs, dim=-1)]
    expected = torch.cat(parts, -1) * w * (F.silu(z) if norm_before_gate else 1)
    torch.testing.assert_close(out, expected)


def test_plain_rmsnorm_and_dtype():
    x = torch.randn(4, 16, dtype=torch.bfloat16)
    w = torch.ones(16)
    out = gated_rms_norm(x, w)
    assert out.dtype == torch.bfloat16
    xf = x.float()
    torch.testing.assert_close(out.float(), xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5), rtol=1e-2, atol=1e-2)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="groups of 3"):
        gated_rms_norm(torch.randn(2, 8), torch.ones(8), group_size=3)
    with pytest.raises(ValueError, match="gate shape"):
        gated_rms_norm(torch.randn(2, 8), torch.ones(8), z=torch.randn(2, 4))
