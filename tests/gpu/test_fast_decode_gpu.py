"""Fast decoding on a CUDA GPU: the split-K decoding cross-attention and the CUDA-graph greedy loop in bf16.

Budget (docs/kernels.md, as tests/gpu/test_model_gpu.py): err(fast) <= 2 * err(reference at the same precision) +
2**-7 with err(t) = max|t - truth| / max|truth| and truth the float32 computation. Tokens: the graph-replayed
``greedy_decode`` gives generate's tokens; a difference is allowed only where generate's own top two logits are
within the bf16 budget of each other (a near tie that bf16 rounding may break either way), and never in the first
four tokens.
"""
from __future__ import annotations

import pytest
import torch

from tests.models.vamba_tiny import PATCH_DIM
from vamba.models import VambaConfig, VambaForConditionalGeneration
from vamba.models.attention import attention_ref
from vamba.models.decode_attention import decode_chunks, split_decode
from vamba.models.fast_decode import graph_capturable, greedy_decode

pytestmark = pytest.mark.gpu

EPS = 2.0 ** -7
TEXT = dict(vocab_size=1024, hidden_size=512, intermediate_size=1024, num_hidden_layers=3, num_attention_heads=8,
            num_key_value_heads=2, max_position_embeddings=8192, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]},
            bos_token_id=1, eos_token_id=2, pad_token_id=0)
VISION = dict(depth=1, embed_dim=128, hidden_size=512, num_heads=4, mlp_ratio=2, spatial_merge_size=2,
              patch_size=14, temporal_patch_size=2)


def rel_err(t: torch.Tensor, truth: torch.Tensor) -> float:
    return ((t.double() - truth.double()).abs().max() / truth.double().abs().max().clamp_min(1e-30)).item()


@pytest.fixture(autouse=True)
def no_tf32():
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("m, rows, shared", [(153_088, 1, False), (538_200, 1, False), (40_000, 3, True),
                                             (40_000, 2, False)])
def test_split_decode_bf16_within_budget(m: int, rows: int, shared: bool) -> None:
    """7B head layout (28 query heads over 4 key/value heads of 128); 1,024 frames and the hour at 640x360."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(rows, 28, 1, 128, device="cuda", generator=g)
    bk = 1 if shared else rows
    k = torch.randn(bk, 4, m, 128, device="cuda", generator=g) * 2 + 0.5
    v = torch.randn(bk, 4, m, 128, device="cuda", generator=g)
    q_seg = k_seg = None
    if rows > 1:  # padded video in the last row, a padding query in the second
        k_seg = torch.zeros(bk, m, dtype=torch.long, device="cuda")
        k_seg[-1, m - 777:] = -1
        q_seg = torch.zeros(rows, 1, dtype=torch.long, device="cuda")
        q_seg[1] = -1

    def ref(q, k, v):
        kk, vv, ks = k, v, k_seg
        if shared:
            kk, vv = k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)
            ks = None if k_seg is None else k_seg.expand(rows, -1)
        return attention_ref(q, kk, vv, causal=False, q_seg=q_seg, k_seg=ks)

    truth = ref(q, k, v)
    half = [t.bfloat16() for t in (q, k, v)]
    with torch.no_grad():
        out = split_decode(*half, q_seg=q_seg, k_seg=k_seg)
        fp32 = split_decode(q, k, v, q_seg=q_seg, k_seg=k_seg)
        base = ref(*half)
        chunks = decode_chunks(m, bk * 4, q.device)
    torch.testing.assert_close(fp32, truth, rtol=1e-5, atol=1e-5)  # the same math in float32
    err, base_err = rel_err(out, truth), rel_err(base, truth)
    assert err <= 2 * base_err + EPS, f"split {err:.3g} > 2 * reference {base_err:.3g} + {EPS:.3g}"
    assert chunks > 1 and m % chunks == 0


def build(dtype: torch.dtype, backend: str) -> VambaForConditionalGeneration:
    torch.manual_seed(0)
    config = VambaConfig(text_config=dict(TEXT), vision_config=dict(VISION),
                         vision_mamba_mixer_config=dict(d_state=64, headdim=32, chunk_size=64, backend=backend))
    return VambaForConditionalGeneration(config).to("cuda", dtype).eval()


def test_graph_greedy_decode_equals_generate_bf16() -> None:
    grid = torch.tensor([[72, 16, 16]], device="cuda")  # 72 temporal patches x 64 tokens = 4,608 video tokens
    pixels = torch.randn(int(grid.prod()), PATCH_DIM, device="cuda")
    # the Mamba-2 kernels where installed (auto): decoding never runs them, the prefill's video cache is the input
    truth_model, model = build(torch.float32, "reference"), build(torch.bfloat16, "auto")
    with torch.no_grad():
        truth_cache = truth_model.encode_video(pixels, grid)
        cache = model.encode_video(pixels.bfloat16(), grid)
    ids = torch.randint(3, 1000, (1, 40), device="cuda")
    n, steps = ids.shape[1], 12
    model.config.decode_attention = "reference"  # today's path: generate with the reference cross-attention
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), video_cache=cache, max_new_tokens=steps,
                         do_sample=False, temperature=None, top_p=None, top_k=None, eos_token_id=[], pad_token_id=0,
                         output_logits=True, return_dict_in_generate=True)
    want, want_logits = out.sequences, [t.float() for t in out.logits]
    model.config.decode_attention = "split"  # the path whose graph capture this checks (auto is the reference)
    assert graph_capturable(model, cache, 1)
    got_logits: list[torch.Tensor] = []
    got = greedy_decode(model, ids, cache, steps, [], 0, cuda_graph=True, scores=got_logits)
    # Truth: the float32 model over the bf16 path's tokens (teacher forcing), one forward.
    with torch.no_grad():
        truth = truth_model(input_ids=got[:, :-1], video_cache=truth_cache).logits[0, n - 1:].float()
    same = (got == want)[0, n:].tolist()
    first_diff = same.index(False) if False in same else steps
    for i in range(first_diff):
        err, base = rel_err(got_logits[i][0], truth[i]), rel_err(want_logits[i][0], truth[i])
        assert err <= 2 * base + EPS, f"step {i}: graph {err:.3g} > 2 * generate {base:.3g} + {EPS:.3g}"
    if first_diff < steps:
        a, b = int(want[0, n + first_diff]), int(got[0, n + first_diff])
        gap = abs(want_logits[first_diff][0, a] - want_logits[first_diff][0, b]).item()
        scale = want_logits[first_diff].abs().max().item()
        assert first_diff >= 4 and gap <= 2 * EPS * scale, (
            f"tokens differ at step {first_diff} ({a} vs {b}); generate's logit gap {gap:.3g} is no near tie")
