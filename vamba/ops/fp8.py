"""FP8 linear layers for Hopper's FP8 tensor cores: ``fp8_linear`` beside its pure-PyTorch reference ``fp8_linear_ref``.

    y = x W^T + b   with   x ~ q(x) * s_x,  W ~ q(W) * s_W,   q(.) in float8_e4m3fn,

one scale per row (row-wise scaling): s_x [M, 1] per token, s_W [N, 1] per output channel, s = amax(|row|) / 448
(448: e4m3's largest finite value), so every row uses e4m3's whole range and an outlier token or channel costs
only its own row precision. The product runs as one ``torch._scaled_mm`` (PyTorch's FP8 GEMM: fp8 x fp8 with
float32 accumulation, the scales applied in its epilogue, output in x's dtype); the bias is added after it.

Backward (only what needs a gradient):
- grad_x = grad_y W: grad_y quantised per token, W per input channel (the GEMM's reduction runs over N now), in FP8;
- grad_W = grad_y^T x: in x's precision, from the saved x (the weight gradient sums over every token; its error
  would accumulate where grad_x's does not). Frozen weights skip it and save no activation.

The reference computes the same quantisation, dequantises to float32 and multiplies there: with a float32 output
the fast path equals it exactly (tests/ops/test_fp8.py). GEMMs whose K or N is not a multiple of 16 (FP8 GEMM's
alignment on CUDA) or whose tensors are not floating point fall back to ``F.linear`` (``fp8_supported``).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
ALIGN = 16  # FP8 GEMM operands: K and N multiples of 16 (CUDA's torch._scaled_mm)


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """x [R, C] -> (q [R, C] float8_e4m3fn, scale [R, 1] float32) with x ~ q * scale, one scale per row."""
    xf = x.float()
    scale = xf.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / E4M3_MAX
    return (xf / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


@functools.cache
def _compiled_quantize():
    # One fused kernel per operand (row amax, divide, cast) instead of four passes over it in eager mode; the token
    # count is dynamic, so one compilation serves every length.
    return torch.compile(quantize_rows, dynamic=True)


def _quantize(x: Tensor) -> tuple[Tensor, Tensor]:
    # inside a compiled region (the vision tower's compiled blocks) Inductor fuses the plain function itself
    if x.is_cuda and not torch.compiler.is_compiling():
        return _compiled_quantize()(x)
    return quantize_rows(x)


def fp8_supported(x: Tensor, weight: Tensor) -> bool:
    """Whether ``fp8_linear`` runs the FP8 GEMM for x [..., K] and weight [N, K] (else it is ``F.linear``)."""
    n, k = weight.shape
    return (x.is_floating_point() and x.dtype != torch.float64 and k % ALIGN == 0 and n % ALIGN == 0
            and x.device.type in ("cuda", "cpu"))


def _scaled_mm(a: Tensor, a_scale: Tensor, b: Tensor, b_scale: Tensor, dtype: torch.dtype) -> Tensor:
    """a [M, K] fp8 (scales [M, 1]) times b [N, K] fp8 (scales [N, 1]), transposed: [M, N] in ``dtype``."""
    return torch._scaled_mm(a, b.t(), scale_a=a_scale, scale_b=b_scale.t(), out_dtype=dtype)


class _FP8Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).contiguous()  # the GEMM's first operand is row-major
        xq, xs = _quantize(x2)
        wq, ws = _quantize(weight)
        y = _scaled_mm(xq, xs, wq, ws, x.dtype)
        if bias is not None:
            y = y + bias.to(y.dtype)
        # grad_W needs x in full precision; a frozen weight needs neither x nor the weight's scales
        ctx.save_for_backward(x2 if weight.requires_grad else None, weight)
        ctx.shape, ctx.has_bias = shape, bias is not None
        return y.reshape(*shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x2, weight = ctx.saved_tensors
        g = grad_y.reshape(-1, grad_y.shape[-1]).contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            gq, gs = _quantize(g)
            wq, ws = _quantize(weight.t().contiguous())  # [K, N] row-major: one scale per input channel
            grad_x = _scaled_mm(gq, gs, wq, ws, grad_y.dtype).reshape(ctx.shape)
        if ctx.needs_input_grad[1]:
            grad_w = (g.t() @ x2.to(g.dtype)).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b


def fp8_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x [..., K], weight [N, K], bias [N] -> [..., N] in x's dtype, the GEMMs in FP8 (module docstring)."""
    if not fp8_supported(x, weight):
        return F.linear(x, weight, bias)
    return _FP8Linear.apply(x, weight, bias)


def fp8_linear_ref(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The reference: the same row-wise quantisation, dequantised, the product and bias in float32, cast to x's dtype."""
    xq, xs = quantize_rows(x.reshape(-1, x.shape[-1]))
    wq, ws = quantize_rows(weight)
    y = (xq.float() * xs) @ (wq.float() * ws).t()
    y = y.to(x.dtype)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def fp8_grad_input_ref(grad_y: Tensor, weight: Tensor) -> Tensor:
    """Reference of ``fp8_linear``'s grad_x: grad_y [..., N] quantised per token, weight [N, K] per input channel."""
    gq, gs = quantize_rows(grad_y.reshape(-1, grad_y.shape[-1]))
    wq, ws = quantize_rows(weight.t())
    g = ((gq.float() * gs) @ (wq.float() * ws).t()).to(grad_y.dtype)
    return g.reshape(*grad_y.shape[:-1], weight.shape[1])
