"""The Mamba-1-style selective-scan video block (the mixer ablation's third arm), against independent forms."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.models.vamba_tiny import row, vamba_config, video_batch
from vamba.inference.streaming import VideoStream
from vamba.models import VambaForConditionalGeneration
from vamba.models.selective_scan import SelectiveScanBlock, SelectiveScanConfig, selective_scan_ref


def scan_quadratic(x, dt, A, B, C, D, seq_idx=None):
    """The same recurrence unrolled: y_t = sum_{s<=t, same sample} C_t . exp(sum_{r=s+1..t} dt_r A) dt_s B_s x_s
    + D x_t, every (t, s) pair at once (float64)."""
    x, dt, A, B, C, D = (v.double() for v in (x, dt, A, B, C, D))
    cum = torch.cumsum(dt[..., None] * A, dim=1)  # [B, L, d, N]
    decay = torch.exp(cum[:, :, None] - cum[:, None, :])  # [B, t, s, d, N]: exp(sum_{r=s+1..t} dt_r A)
    length = x.shape[1]
    mask = torch.ones(length, length, dtype=torch.bool).tril()[None]
    if seq_idx is not None:
        mask = mask & (seq_idx[:, :, None] == seq_idx[:, None, :])
    decay = decay * mask[..., None, None]
    inp = (dt[..., None] * B[:, :, None, :]) * x[..., None]  # [B, s, d, N]
    y = torch.einsum("btsdn,bsdn,btn->btd", decay, inp, C)
    return y + x * D


def _inputs(batch=2, length=9, d=6, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, d, generator=g)
    dt = F.softplus(torch.randn(batch, length, d, generator=g))
    A = -torch.rand(d, n, generator=g) - 0.1
    B, C = torch.randn(batch, length, n, generator=g), torch.randn(batch, length, n, generator=g)
    D = torch.randn(d, generator=g)
    return x, dt, A, B, C, D


@pytest.mark.parametrize("packed", [False, True])
def test_scan_equals_the_unrolled_form_forward_and_backward(packed: bool) -> None:
    inputs = [t.double().requires_grad_() for t in _inputs()]
    seq_idx = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 2, 2], [0] * 9]) if packed else None
    y = selective_scan_ref(*inputs, seq_idx=seq_idx)
    want = scan_quadratic(*inputs, seq_idx=seq_idx)
    torch.testing.assert_close(y, want)
    grad = torch.randn_like(y)
    got = torch.autograd.grad(y, inputs, grad)
    expected = torch.autograd.grad(want, inputs, grad)
    for name, a, b in zip("x dt A B C D".split(), got, expected):
        torch.testing.assert_close(a, b, msg=name)


def test_block_packed_rows_and_streaming_pieces_equal_one_shot() -> None:
    torch.manual_seed(0)
    block = SelectiveScanBlock(SelectiveScanConfig(d_model=8, d_state=4, d_conv=4))
    a, b = torch.randn(1, 5, 8), torch.randn(1, 6, 8)
    packed = block(torch.cat([a, b], 1), seq_idx=torch.tensor([[0] * 5 + [1] * 6]))
    torch.testing.assert_close(packed, torch.cat([block(a), block(b)], 1))
    whole = block(b)
    first, state = block(b[:, :2], return_state=True)  # a piece shorter than the conv window
    second, state = block(b[:, 2:5], state=state, return_state=True)
    third = block(b[:, 5:], state=state)
    torch.testing.assert_close(torch.cat([first, second, third], 1), whole)
    with pytest.raises(NotImplementedError, match="packed"):
        block(a, seq_idx=torch.zeros(1, 5, dtype=torch.long), state=state)


def test_vamba_with_selective_scan_mixers_trains_streams_and_round_trips(tmp_path) -> None:
    torch.manual_seed(0)
    model = VambaForConditionalGeneration(vamba_config(vision_mixer_kind="selective_scan")).train()
    assert all(isinstance(layer.vision_mixer, SelectiveScanBlock) for layer in model.model.layers)
    batch = video_batch([6, 8], [[(2, 4, 4)], [(1, 2, 2)]])
    model(**batch).loss.backward()
    mixer = model.model.layers[0].vision_mixer
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mixer.parameters())
    model.eval()
    one = {k: v for k, v in row(batch, 0).items() if k != "labels"}
    with torch.no_grad():
        whole = model(**one).logits
        cache = model.encode_video(one["pixel_values"], one["grid_thw"])
        from_cache = model(input_ids=one["input_ids"], attention_mask=one["attention_mask"], video_cache=cache).logits
    torch.testing.assert_close(from_cache, whole, rtol=1e-4, atol=1e-5)
    stream = VideoStream(model, (2, 4, 4))  # the video in two pieces, states carried (vamba chat / eval)
    for piece in one["pixel_values"].chunk(2):
        stream.push(piece, torch.tensor([[1, 4, 4]]))
    with torch.no_grad():
        streamed = model(input_ids=one["input_ids"], attention_mask=one["attention_mask"],
                         video_cache=stream.finish()).logits
    torch.testing.assert_close(streamed, whole, rtol=1e-4, atol=1e-5)
    model.save_pretrained(tmp_path)
    loaded = VambaForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.config.vision_mixer_kind == "selective_scan"
    with torch.no_grad():
        torch.testing.assert_close(loaded(**one).logits, whole)
    with pytest.raises(ValueError, match="vision_mixer_kind"):
        vamba_config(vision_mixer_kind="mamba1")
