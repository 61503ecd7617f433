"""Streaming prefill on a CUDA GPU with the fast kernels (Triton SSD and causal-conv1d continuing from a state).

Truth: the one-shot ``encode_video`` of the same model in float32 with the reference Mamba-2 path. Budget (as
tests/gpu/test_model_gpu.py): err(streamed, bf16, fast) <= 2 * err(one-shot, bf16, fast) + 2**-7, with
err(t) = max|t - truth| / max|truth|: streaming may not add more error than bf16 itself does.
"""
from __future__ import annotations

import pytest
import torch

from tests.models.vamba_tiny import PATCH_DIM
from vamba.inference.streaming import split_patches, stream_video
from vamba.models import VambaConfig, VambaForConditionalGeneration

pytestmark = pytest.mark.gpu

EPS = 2.0 ** -7
TEXT = dict(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]},
            bos_token_id=1, eos_token_id=2, pad_token_id=0)
VISION = dict(depth=2, embed_dim=128, hidden_size=256, num_heads=4, mlp_ratio=2, spatial_merge_size=2,
              patch_size=14, temporal_patch_size=2)


def rel_err(t: torch.Tensor, truth: torch.Tensor) -> float:
    return ((t.double() - truth.double()).abs().max() / truth.double().abs().max().clamp_min(1e-30)).item()


def model(backend: str, options: dict) -> VambaForConditionalGeneration:
    torch.manual_seed(0)
    config = VambaConfig(text_config=dict(TEXT), vision_config=dict(VISION), **options,
                         vision_mamba_mixer_config=dict(d_state=64, headdim=32, chunk_size=64, backend=backend))
    return VambaForConditionalGeneration(config).cuda().eval()


@pytest.mark.parametrize("options", [{}, {"cross_attn_use_position_embeddings": True,
                                          "cross_attn_use_layer_norm": True}], ids=["released", "rope+norm"])
def test_streamed_cache_matches_one_shot_bf16(options: dict) -> None:
    grid = torch.tensor([[23, 8, 12]], device="cuda")  # 23 temporal patches x 24 tokens = 552 tokens, chunk 64
    pixels = torch.randn(int(grid.prod()), PATCH_DIM, device="cuda")
    truth = model("reference", options).encode_video(pixels, grid)
    fast = model("fast", options).to(torch.bfloat16)
    whole = fast.encode_video(pixels, grid)
    for piece_t in (3, 8):  # piece boundaries inside Mamba-2 chunks and at uneven places
        streamed = stream_video(fast, split_patches(pixels, grid, piece_t), tuple(grid[0].tolist()))
        for layer, (t, a, b) in enumerate(zip(truth.keys + truth.values, whole.keys + whole.values,
                                              streamed.keys + streamed.values)):
            base, err = rel_err(a, t), rel_err(b, t)
            assert err <= 2 * base + EPS, f"piece {piece_t}, tensor {layer}: {err:.3g} > 2 * {base:.3g} + {EPS:.3g}"
