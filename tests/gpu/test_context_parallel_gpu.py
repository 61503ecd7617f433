"""Context parallelism's fused cross-attention through the CUDA memory-efficient kernel (vamba.parallel.attention).

The global-LSE backward in every dtype, on a one-rank group, against the single-process SDPA path and the float64
truth (tests/parallel/test_fused_attention.py runs the same on the CPU): finite gradients of q, k and v within
err(fused) <= 2 err(SDPA) + eps. Half precision is where the kernel computes rowsum(dO * O) itself from the output
it is given: with an output not in its forward's layout, q and k got NaN gradients on an H200 (2026-12-02).
An Nq of 37 leaves padded rows in the kernel's log-sum-exp (a multiple of 32).
The sharded version of the same combine (two slices) is in scripts/bench_context_parallel.py's kernels part.
"""
from __future__ import annotations

import pytest
import torch

from tests.parallel.test_fused_attention import assert_within_budget, fused_against_sdpa, one_rank_group  # noqa: F401

pytestmark = pytest.mark.gpu

# float32: the floor of TF32 (2^-10), as for the Triton kernels (tests/gpu/test_ops_gpu.py)
EPS = {torch.float32: 2.0**-10, torch.bfloat16: torch.finfo(torch.bfloat16).eps,
       torch.float16: torch.finfo(torch.float16).eps}


@pytest.mark.parametrize("nq", [37, 160])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
def test_fused_cross_attention_gradients_on_cuda(one_rank_group: None, dtype: torch.dtype, masked: bool,
                                                 nq: int) -> None:
    errors = fused_against_sdpa(torch.device("cuda"), dtype, nq=nq, masked=masked)
    assert_within_budget(errors, EPS[dtype])
