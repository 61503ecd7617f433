"""The vision tower's fast forward (vamba.models.vision) on a CUDA GPU in bf16, against transformers' forward.

Error budget as tests/gpu/test_model_gpu.py: err(fast) <= 2 * err(transformers' forward in bf16) + 2^-7, with
err(t) = max|t - truth| / max|truth| and truth = transformers' forward in float32 on the same (bf16-valued)
weights and pixels. Outputs (blocks' and merger's) and the gradients of the pixels and of every weight, the
blocks trainable. Block widths of Qwen2-VL-7B (1280 wide, 16 heads of 80, MLP 5120), two blocks; frames of
640x360 (26x46 patches). On CUDA in bf16, ``auto`` runs a ragged batch through the variable-length kernel; the
other cases through one batched SDPA call per layer. VAMBA_GPU_REPORT=path.jsonl appends every error.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig

from vamba.models.attention import varlen_kernel
from vamba.models.vision import VambaVisionTower
from vamba.utils.io import append_jsonl

pytestmark = pytest.mark.gpu

REPORT = os.environ.get("VAMBA_GPU_REPORT")
EPS = 2.0 ** -7
VISION = dict(depth=2, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4, spatial_merge_size=2,
              patch_size=14, temporal_patch_size=2)
CASES = {
    "one video, 16 frames at 640x360": [[8, 26, 46]],
    "ragged: videos of different sizes and images": [[4, 26, 46], [1, 20, 30], [2, 10, 14], [1, 16, 16]],
    "one image": [[1, 26, 46]],
}
MODES = ["auto", "batched"] + (["varlen"] if varlen_kernel() is not None else []) + ["auto+compile"]


def rel_err(t: torch.Tensor, truth: torch.Tensor) -> float:
    return ((t.double() - truth.double()).abs().max() / truth.double().abs().max().clamp_min(1e-30)).item()


@pytest.fixture(scope="module")
def towers() -> tuple[VambaVisionTower, VambaVisionTower]:
    """(bf16 tower, float32 copy with the same weight values); biases and LayerNorms made non-trivial."""
    torch.manual_seed(0)
    with torch.device("cuda"):
        tower = VambaVisionTower(Qwen2VLVisionConfig(**VISION))
    with torch.no_grad():
        for name, p in tower.named_parameters():
            if name.endswith("bias") or ".norm" in name or "ln_q" in name:
                p.add_(0.02 * torch.randn_like(p))
    tower = tower.to(torch.bfloat16).train()
    return tower, copy.deepcopy(tower).float()


def _run(tower: VambaVisionTower, pixels: torch.Tensor, grid: torch.Tensor, **how) -> list[torch.Tensor]:
    x = pixels.to(tower.dtype).requires_grad_()
    out = tower(x, grid_thw=grid, **how)
    outs = [out.last_hidden_state, out.pooler_output]
    g = torch.Generator(device="cuda").manual_seed(2)
    w = [torch.randn(t.shape, device="cuda", generator=g, dtype=torch.float64) for t in outs]
    loss = sum((t.double() * wi).sum() for t, wi in zip(outs, w))
    return [t.detach() for t in outs] + list(torch.autograd.grad(loss, [x, *tower.parameters()]))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(CASES))
def test_fast_tower_bf16_within_budget(towers, case: str, mode: str) -> None:
    tower, truth_tower = towers
    grid = torch.tensor(CASES[case], device="cuda")
    g = torch.Generator(device="cuda").manual_seed(1)
    pixels = torch.randn(int(grid.prod(-1).sum()), 1176, device="cuda", generator=g).bfloat16().float()
    attention, compile = mode.removesuffix("+compile"), mode.endswith("+compile")
    truth = _run(truth_tower, pixels, grid, attention="reference")
    base = _run(tower, pixels, grid, attention="reference")
    fast = _run(tower, pixels, grid, attention=attention, compile=compile)
    names = ["last_hidden_state", "pooler_output", "d pixels", *(f"d {n}" for n, _ in tower.named_parameters())]
    failures, rows = [], []
    for name, f, b, t in zip(names, fast, base, truth):
        err, ref = rel_err(f, t), rel_err(b, t)
        rows.append({"test": f"vision[{case}][{mode}].{name}", "err": err, "err_reference_same_precision": ref,
                     "eps": EPS})
        if err > 2 * ref + EPS:
            failures.append(f"{name}: {err:.3g} > 2 * {ref:.3g} + {EPS:.3g}")
    if REPORT:
        append_jsonl(REPORT, rows)
    assert not failures, failures
