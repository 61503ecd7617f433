"""The split-K decoding cross-attention (vamba.models.decode_attention) against the reference attention, float32."""
from __future__ import annotations

import pytest
import torch

from tests.models.vamba_tiny import vamba_config
from vamba.models import VambaConfig
from vamba.models.attention import attention_ref
from vamba.models.decode_attention import decode_chunks, split_decode, use_split


def inputs(b: int, bk: int, hq: int, hkv: int, nq: int, m: int, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, nq, d, generator=g)
    # keys with a shared component and a spread of norms: softmax weights far from uniform
    k = torch.randn(bk, hkv, m, d, generator=g) * torch.rand(bk, hkv, m, 1, generator=g) * 3 + 0.5
    v = torch.randn(bk, hkv, m, d, generator=g)
    return q, k, v


def reference(q, k, v, q_seg=None, k_seg=None, scale=None):
    b = q.shape[0]
    if k.shape[0] != b:
        k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        k_seg = None if k_seg is None else k_seg.expand(b, -1)
    return attention_ref(q, k, v, causal=False, q_seg=q_seg, k_seg=k_seg, scale=scale)


@pytest.mark.parametrize("chunks", [1, 2, 5, 12, 60])
@pytest.mark.parametrize("nq", [1, 3])
def test_split_equals_reference_with_gqa(chunks: int, nq: int) -> None:
    q, k, v = inputs(2, 2, hq=6, hkv=2, nq=nq, m=60)
    out = split_decode(q, k, v, scale=0.3, chunks=chunks)
    torch.testing.assert_close(out, reference(q, k, v, scale=0.3), rtol=1e-6, atol=1e-6)


def test_masked_and_padded_rows() -> None:
    """Padding keys, a padding query (zeros), a row whose video is all padding (zeros), packed segments."""
    q, k, v = inputs(3, 3, hq=4, hkv=2, nq=2, m=24)
    k_seg = torch.zeros(3, 24, dtype=torch.long)
    k_seg[0, 17:] = -1  # padded video
    k_seg[1] = -1  # a text-only row: reads nothing
    k_seg[2, 10:] = 1  # two samples packed in one row
    q_seg = torch.tensor([[0, -1], [0, 0], [0, 1]])
    for chunks in (1, 4, 6):
        out = split_decode(q, k, v, q_seg=q_seg, k_seg=k_seg, chunks=chunks)
        torch.testing.assert_close(out, reference(q, k, v, q_seg, k_seg), rtol=1e-6, atol=1e-6)
    assert out[0, 1].abs().max() == 0 and out[1].abs().max() == 0


@pytest.mark.parametrize("masked", [False, True])
def test_one_video_shared_by_several_rows(masked: bool) -> None:
    """Bk = 1: every query row reads the same cached video (several questions about one video)."""
    q, k, v = inputs(3, 1, hq=6, hkv=3, nq=1, m=40)
    q_seg = torch.tensor([[0], [-1], [0]]) if masked else None
    k_seg = torch.cat([torch.zeros(1, 33, dtype=torch.long), torch.full((1, 7), -1)], 1) if masked else None
    out = split_decode(q, k, v, q_seg=q_seg, k_seg=k_seg, chunks=4)
    torch.testing.assert_close(out, reference(q, k, v, q_seg, k_seg), rtol=1e-6, atol=1e-6)


def test_keys_in_the_projections_memory_order() -> None:
    """forward collects K/V as [B, M, Hkv, d].transpose(1, 2): not contiguous; the result is the same."""
    q, k, v = inputs(2, 2, hq=4, hkv=2, nq=1, m=30)
    kt, vt = k.transpose(1, 2).contiguous().transpose(1, 2), v.transpose(1, 2).contiguous().transpose(1, 2)
    assert not kt.is_contiguous()
    torch.testing.assert_close(split_decode(q, kt, vt, chunks=3), reference(q, k, v), rtol=1e-6, atol=1e-6)


def test_chunk_counts_divide_the_length() -> None:
    cpu = torch.device("cpu")
    for m in (538_200, 153_088, 4096, 257, 61):  # an hour, 1,024 frames at 640x360, a power of two, primes
        c = decode_chunks(m, 4, cpu)
        assert m % c == 0 and (m // c >= 256 or c == 1), (m, c)
    assert decode_chunks(538_200, 4, cpu) > 1 and decode_chunks(61, 4, cpu) == 1
    q, k, v = inputs(1, 1, hq=2, hkv=1, nq=1, m=61)  # a prime length: one chunk
    torch.testing.assert_close(split_decode(q, k, v), reference(q, k, v), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="chunks=7 does not divide the 61"):
        split_decode(q, k, v, chunks=7)


def test_inference_only_and_the_switch() -> None:
    q, k, v = inputs(1, 1, hq=2, hkv=1, nq=1, m=8)
    q.requires_grad_(True)
    with pytest.raises(ValueError, match="inference-only"):
        split_decode(q, k, v)
    with pytest.raises(ValueError, match="decode_attention='split' is inference-only"):
        use_split("split", q, k)
    assert not use_split("auto", q, k)  # training or CPU: the reference
    with torch.no_grad():
        assert use_split("split", q, k) and not use_split("reference", q, k) and not use_split("auto", q, k)
        assert not use_split("split", torch.zeros(1, 2, 17, 16), k)  # a prompt, not a decoding step
        split_decode(q, k, v)
    with pytest.raises(ValueError, match="decode_attention must be one of"):
        use_split("fast", q, k)
    with pytest.raises(ValueError, match="VambaConfig.decode_attention must be one of"):
        VambaConfig(decode_attention="fast")
    assert vamba_config().decode_attention == "auto"
