"""FP8 on a CUDA GPU with FP8 tensor cores (compute capability >= 8.9): ``fp8_linear`` (torch._scaled_mm) against
its dequantised reference, forward and backward, eager and compiled, and the vision tower and the decoder with
``fp8`` against bf16. The reference and the fast path share the quantisation; they differ only in the GEMM's
accumulation order and the output's rounding to bf16, so they agree to bf16's resolution."""
from __future__ import annotations

import pytest
import torch

from tests.models.vamba_tiny import PATCH_DIM
from vamba.models import VambaConfig, VambaForConditionalGeneration
from vamba.models.fp8 import set_fp8
from vamba.ops.fp8 import fp8_grad_input_ref, fp8_linear, fp8_linear_ref

pytestmark = pytest.mark.gpu

TEXT = dict(vocab_size=1024, hidden_size=512, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=8,
            num_key_value_heads=2, max_position_embeddings=8192, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]},
            bos_token_id=1, eos_token_id=2, pad_token_id=0)
VISION = dict(depth=2, embed_dim=256, hidden_size=512, num_heads=4, mlp_ratio=4, spatial_merge_size=2,
              patch_size=14, temporal_patch_size=2)


def _fp8_device() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)


needs_fp8 = pytest.mark.skipif(not _fp8_device(), reason="needs a CUDA GPU with FP8 tensor cores (sm_89+)")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@needs_fp8
@pytest.mark.parametrize("compiled", [False, True])
def test_fp8_linear_matches_its_reference(compiled):
    torch.manual_seed(0)
    x = torch.randn(4096, 1280, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(3840, 1280, device="cuda", dtype=torch.bfloat16) * 0.03).requires_grad_()
    b = torch.randn(3840, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    fn = torch.compile(fp8_linear) if compiled else fp8_linear
    y = fn(x, w, b)
    assert y.dtype == torch.bfloat16
    assert rel(y, fp8_linear_ref(x.detach(), w.detach(), b.detach())) < 2 ** -8
    g = torch.randn_like(y)
    y.backward(g)
    assert rel(x.grad, fp8_grad_input_ref(g, w.detach())) < 2 ** -8
    want_w = (g.float().t() @ x.detach().float())
    assert rel(w.grad, want_w) < 2 ** -7
    exact = torch.nn.functional.linear(x.detach().float(), w.detach().float(), b.detach().float())
    assert rel(y, exact) < 0.06  # FP8 itself: e4m3 keeps 3 mantissa bits


def _model(vision_compile: bool) -> VambaForConditionalGeneration:
    config = VambaConfig(text_config=TEXT, vision_config=VISION, vision_compile=vision_compile,
                         vision_mamba_mixer_config={"d_state": 32, "headdim": 64, "chunk_size": 64})
    torch.manual_seed(0)
    return VambaForConditionalGeneration(config).cuda().to(torch.bfloat16).eval()


@needs_fp8
@pytest.mark.parametrize("vision_compile", [False, True])
def test_model_in_fp8_is_close_to_bf16(vision_compile):
    model = _model(vision_compile)
    g = torch.Generator().manual_seed(0)
    grid = torch.tensor([[8, 16, 24]], device="cuda")
    pixels = torch.randn(int(grid.prod()), PATCH_DIM, generator=g).cuda().to(torch.bfloat16)
    ids = torch.randint(3, 1000, (1, 256), generator=g).cuda()
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels, "grid_thw": grid,
             "visual_row": torch.zeros(1, dtype=torch.long, device="cuda"),
             "visual_seq_idx": torch.zeros(1, dtype=torch.long, device="cuda")}
    with torch.no_grad():
        vision_ref, logits_ref = model._vision_tower(pixels, grid), model(**batch).logits
        set_fp8(model, "all")
        vision, logits = model._vision_tower(pixels, grid), model(**batch).logits
    # random weights: 0.099 for the logits on the CPU in float32 (2026-12-07); e4m3's error adds up over the layers
    assert 0 < rel(vision, vision_ref) < 0.2 and 0 < rel(logits, logits_ref) < 0.2
