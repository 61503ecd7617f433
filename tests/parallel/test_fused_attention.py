"""The fused cross-attention path of context parallelism (vamba.parallel.attention), in one process.

- ``backward_operands`` hands the kernel's backward the global output and log-sum-exp in the layout and padding of
  the kernel's own forward results. For CUDA's memory-efficient kernel those are taken from PyTorch's own
  description of it (its meta registration, which torch.compile relies on): output stored [B, Nq, H, d], LSE
  padded to a multiple of 32 queries. The CUDA backward assumes that output layout (on an H200 a [B, H, Nq, d]
  output gave NaN gradients of q and k in bfloat16, 2026-12-02).
- The fused path in bfloat16 (the training dtype) on a one-rank group against the single-process SDPA path and
  the float64 truth: finite gradients of q, k and v within the usual low-precision budget.
  tests/gpu/test_context_parallel_gpu.py runs the same comparison through the CUDA kernel.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist

from vamba.models.attention import attention, attention_ref
from vamba.parallel.attention import backward_operands, cross_attention
from vamba.utils.distributed import close_process_group


def _cuda_kernel_outputs(b: int, h: int, nq: int, nk: int, d: int, dtype: torch.dtype):
    """Empty tensors shaped and strided as the CUDA memory-efficient kernel returns (out, lse), from its meta kernel."""
    q = torch.empty(b, h, nq, d, dtype=dtype, device="meta")
    k = torch.empty(b, h, nk, d, dtype=dtype, device="meta")
    out, lse, _, _ = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, k, None, True, 0.0, False,
                                                                            scale=d**-0.5)
    return out, lse


@pytest.mark.parametrize("nq", [37, 64])
def test_backward_operands_take_the_cuda_kernels_layout_and_padding(nq: int) -> None:
    b, h, nk, d = 2, 4, 50, 16
    meta_out, meta_lse = _cuda_kernel_outputs(b, h, nq, nk, d, torch.bfloat16)
    assert meta_lse.shape == (b, h, math.ceil(nq / 32) * 32) and meta_lse.dtype == torch.float32
    # the same tensors on the CPU, with the kernel's values: padded LSE entries are +inf (its forward writes them)
    kernel_out = torch.empty_strided(meta_out.shape, meta_out.stride(), dtype=meta_out.dtype).normal_()
    kernel_lse = torch.randn(meta_lse.shape)
    kernel_lse[..., nq:] = float("inf")
    glob = torch.randn(b, h, nq, d, dtype=torch.float32)  # contiguous [B, H, Nq, d], as the combine makes it
    glob_lse = torch.randn(b, h, nq, dtype=torch.float32)
    glob_lse[0, 1, 3] = float("inf")  # a query that reads nothing anywhere
    out, lse = backward_operands(glob, glob_lse, kernel_out, kernel_lse)
    # what the CUDA backward reads: `out` with the query stride H * d (it takes none), in the kernel's dtype
    assert out.shape == meta_out.shape and out.stride() == meta_out.stride() and out.dtype == torch.bfloat16
    assert out.transpose(1, 2).is_contiguous() and out.stride(2) == h * d
    torch.testing.assert_close(out, glob.to(torch.bfloat16), rtol=0, atol=0)
    assert lse.shape == meta_lse.shape and lse.stride() == meta_lse.stride() and lse.dtype == torch.float32
    torch.testing.assert_close(lse[..., :nq], glob_lse, rtol=0, atol=0)
    assert torch.equal(lse[..., nq:], kernel_lse[..., nq:])  # the kernel's own padding, untouched
    assert kernel_lse[..., :nq].isfinite().all()  # the kernel's buffer itself is not written


def test_backward_operands_take_the_cpu_kernels_layout() -> None:
    q, k = torch.randn(2, 4, 37, 16, dtype=torch.bfloat16), torch.randn(2, 4, 50, 16, dtype=torch.bfloat16)
    kernel_out, kernel_lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, k, 0.0, False,
                                                                                        scale=0.25)
    glob, glob_lse = torch.randn(2, 4, 37, 16), torch.randn(2, 4, 37)
    out, lse = backward_operands(glob, glob_lse, kernel_out, kernel_lse)
    assert out.stride() == kernel_out.stride() and out.dtype == kernel_out.dtype
    assert lse.shape == kernel_lse.shape and lse.stride() == kernel_lse.stride()
    torch.testing.assert_close(lse, glob_lse.to(lse.dtype), rtol=0, atol=0)


@pytest.fixture
def one_rank_group() -> Iterator[None]:
    """A gloo group of one process (an in-memory store: no port), closed afterwards."""
    assert not dist.is_initialized()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        close_process_group()


def fused_against_sdpa(device: torch.device, dtype: torch.dtype, nq: int,
                       masked: bool) -> dict[str, tuple[float, float]]:
    """(error of the fused path, error of the single-process SDPA path) per output/gradient, against the float64
    truth on the same low-precision inputs. Needs an initialised one-rank default group."""
    g = torch.Generator().manual_seed(0)
    b, hq, hkv, nk, d = 1, 8, 2, 300, 64
    inputs = [torch.randn(b, hq, nq, d, generator=g), torch.randn(b, hkv, nk, d, generator=g),
              torch.randn(b, hkv, nk, d, generator=g)]
    cotangent = torch.randn(b, nq, hq, d, generator=g)
    q_seg = k_seg = None
    if masked:  # two packed samples, a text-only one (reads nothing: +inf LSE) and padding keys
        q_seg = torch.zeros(b, nq, dtype=torch.long)
        q_seg[:, nq // 2:] = 1
        q_seg[:, -3:] = 2
        k_seg = torch.zeros(b, nk, dtype=torch.long)
        k_seg[:, nk // 3:] = 1
        k_seg[:, -5:] = -1
        q_seg, k_seg = q_seg.to(device), k_seg.to(device)
    scale = d**-0.5

    def run(fn, leaves: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        q, k, v = (t.to(device).requires_grad_(True) for t in leaves)
        out = fn(q, k, v)
        grads = torch.autograd.grad((out.double() * cotangent.to(device, torch.float64)).sum(), (q, k, v))
        return dict(zip(("out", "q", "k", "v"), (out, *grads)))

    low = [t.to(dtype) for t in inputs]
    truth = run(lambda q, k, v: attention_ref(q, k, v, causal=False, q_seg=q_seg, k_seg=k_seg, scale=scale),
                [t.double() for t in low])  # float64 on the rounded inputs
    fused = run(lambda q, k, v: cross_attention(q, k, v, q_seg, k_seg, scale, dist.group.WORLD, fused=True),
                low)
    sdpa = run(lambda q, k, v: attention(q, k, v, causal=False, q_seg=q_seg, k_seg=k_seg, backend="sdpa",
                                         scale=scale), low)

    def err(t: torch.Tensor, ref: torch.Tensor) -> float:
        ref = ref.detach()
        return float((t.detach().double() - ref).abs().max() / ref.abs().max())

    return {name: (err(fused[name], truth[name]), err(sdpa[name], truth[name])) for name in truth}


def assert_within_budget(errors: dict[str, tuple[float, float]], eps: float) -> None:
    """err(fused) <= 2 err(SDPA) + eps, for the output and the gradients of q, k and v (NaN fails)."""
    bad = {name: e for name, e in errors.items() if not e[0] <= 2 * e[1] + eps}
    assert not bad, f"fused vs truth above 2 x SDPA's error + eps ({eps:.2g}): {bad}"


@pytest.mark.parametrize("masked", [False, True])
def test_fused_bf16_gradients_on_cpu(one_rank_group: None, masked: bool) -> None:
    errors = fused_against_sdpa(torch.device("cpu"), torch.bfloat16, nq=37, masked=masked)
    assert_within_budget(errors, torch.finfo(torch.bfloat16).eps)
