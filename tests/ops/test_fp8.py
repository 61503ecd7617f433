"""FP8 linear (torch._scaled_mm, which runs on the CPU too) against its dequantise-then-matmul reference, forward
and backward, and against the unquantised product within FP8's error."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vamba.ops.fp8 import E4M3_MAX, fp8_grad_input_ref, fp8_linear, fp8_linear_ref, fp8_supported, quantize_rows


def test_quantize_rows_uses_each_rows_range():
    x = torch.tensor([[1.0, -2.0, 0.5, 0.0], [1000.0, 3.0, -7.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    q, s = quantize_rows(x)
    assert q.dtype == torch.float8_e4m3fn and s.shape == (3, 1)
    assert q.float().abs().amax(1)[:2].tolist() == [E4M3_MAX, E4M3_MAX]  # each row's largest |value| maps to 448
    assert torch.isfinite(s).all() and (q.float()[2] == 0).all()  # an all-zero row stays zero, no NaN
    torch.testing.assert_close(q.float() * s, x, rtol=0.07, atol=1e-3)  # e4m3: 3 mantissa bits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_equals_reference(dtype, bias):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 64, dtype=dtype)
    w = torch.randn(48, 64, dtype=dtype) * 0.1
    b = torch.randn(48, dtype=dtype) if bias else None
    y = fp8_linear(x, w, b)
    assert y.shape == (3, 5, 48) and y.dtype == dtype
    torch.testing.assert_close(y, fp8_linear_ref(x, w, b), rtol=0, atol=0)
    exact = F.linear(x.double(), w.double(), None if b is None else b.double())
    rel = (y.double() - exact).norm() / exact.norm()
    assert 0 < rel < 0.06  # quantised (not the bf16 product by accident), within FP8's error


@pytest.mark.parametrize("weight_trains", [True, False])
def test_backward_equals_reference(weight_trains):
    torch.manual_seed(1)
    x = torch.randn(2, 7, 32, dtype=torch.float32, requires_grad=True)
    w = (torch.randn(16, 32) * 0.2).requires_grad_(weight_trains)
    b = torch.randn(16, requires_grad=True)
    g = torch.randn(2, 7, 16)
    fp8_linear(x, w, b).backward(g)
    torch.testing.assert_close(x.grad, fp8_grad_input_ref(g, w.detach()), rtol=0, atol=0)
    torch.testing.assert_close(b.grad, g.sum((0, 1)))
    if weight_trains:  # the weight gradient in full precision
        torch.testing.assert_close(w.grad, g.reshape(-1, 16).t() @ x.detach().reshape(-1, 32))
    else:
        assert w.grad is None


def test_backward_of_input_is_close_to_unquantised():
    torch.manual_seed(2)
    x = torch.randn(64, 128, requires_grad=True)
    w = torch.randn(256, 128) * 0.05
    g = torch.randn(64, 256)
    fp8_linear(x, w).backward(g)
    exact = g @ w
    assert 0 < ((x.grad - exact).norm() / exact.norm()) < 0.06


def test_unaligned_shapes_fall_back_to_the_plain_product():
    x, w = torch.randn(4, 1176), torch.randn(32, 1176)  # K = 1176 (the patch embedding): not a multiple of 16
    assert not fp8_supported(x, w)
    torch.testing.assert_close(fp8_linear(x, w), F.linear(x, w), rtol=0, atol=0)
    assert not fp8_supported(torch.randn(4, 32, dtype=torch.float64), torch.randn(16, 32, dtype=torch.float64))
