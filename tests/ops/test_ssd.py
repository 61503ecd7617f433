"""SSD reference scan vs a step-by-step recurrence (float64), packed samples, states, streaming."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vamba.ops import ssd_scan, ssd_scan_ref


def recurrence(x, dt, A, B, C, D, dt_bias, seq_idx=None, initial_state=None, dt_limit=(0.0, float("inf"))):
    """The SSM one token at a time: state_t = exp(dt_t A) state_{t-1} + dt_t x_t B_t^T; y_t = state_t C_t + D x_t."""
    b, l, h, p = x.shape
    g = B.shape[2]
    dt = F.softplus(dt + dt_bias).clamp(*dt_limit)
    Bh, Ch = B.repeat_interleave(h // g, dim=2), C.repeat_interleave(h // g, dim=2)
    state = torch.zeros(b, h, p, B.shape[-1], dtype=x.dtype) if initial_state is None else initial_state
    ys = []
    for t in range(l):
        if seq_idx is not None and t > 0:
            state = state * (seq_idx[:, t] == seq_idx[:, t - 1]).to(x.dtype)[:, None, None, None]
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]
        state = decay * state + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, t]) + D[:, None] * x[:, t])
    return torch.stack(ys, dim=1), state


def make_inputs(b, l, h, p, g, n, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    return dict(x=r(b, l, h, p), dt=r(b, l, h) - 1.0, A=-torch.rand(h, generator=gen, dtype=dtype) * 2 - 0.1,
                B=r(b, l, g, n), C=r(b, l, g, n), D=r(h), dt_bias=r(h) * 0.5)


def random_seq_idx(b, l, samples, seed=0):
    """[b, l] int32, nondecreasing: each row cut at random points into up to ``samples`` pieces."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(b):
        cuts = torch.zeros(l, dtype=torch.int32)
        cuts[torch.randint(1, l, (samples - 1,), generator=gen)] = 1
        rows.append(torch.cumsum(cuts, 0, dtype=torch.int32))
    return torch.stack(rows)


def grads(out, inputs):
    return torch.autograd.grad(out, inputs, torch.ones_like(out) if out.dim() else None, allow_unused=False)


@pytest.mark.parametrize(
    "b,l,h,p,g,n,chunk,samples",
    [(1, 1, 1, 1, 1, 1, 4, 1),  # a single token
     (2, 37, 4, 3, 2, 5, 8, 1),  # length not a multiple of the chunk, two groups
     (2, 40, 6, 4, 3, 4, 8, 3),  # exact chunks, packed samples
     (1, 53, 2, 8, 1, 16, 16, 5),  # boundaries inside and on chunk edges
     (3, 19, 4, 2, 1, 3, 64, 2)])  # one partial chunk
def test_reference_matches_recurrence_with_gradients(b, l, h, p, g, n, chunk, samples):
    inp = make_inputs(b, l, h, p, g, n)
    inp["initial_state"] = torch.randn(b, h, p, n, dtype=torch.float64)
    seq = random_seq_idx(b, l, samples) if samples > 1 else None
    leaves = {k: v.requires_grad_() for k, v in inp.items()}
    names = list(leaves)
    w = torch.randn(b, l, h, p, dtype=torch.float64)
    ws = torch.randn(b, h, p, n, dtype=torch.float64)

    y, s = ssd_scan_ref(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], chunk, D=inp["D"], dt_bias=inp["dt_bias"],
                        seq_idx=seq, initial_state=inp["initial_state"], return_final_state=True)
    y0, s0 = recurrence(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], inp["D"], inp["dt_bias"], seq, inp["initial_state"])
    assert y.dtype == torch.float64 and s.dtype == torch.float64
    torch.testing.assert_close(y, y0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s0, rtol=1e-10, atol=1e-10)

    g_ref = grads((y * w).sum() + (s * ws).sum(), [leaves[k] for k in names])
    g_rec = grads((y0 * w).sum() + (s0 * ws).sum(), [leaves[k] for k in names])
    for name, a, e in zip(names, g_ref, g_rec):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9, msg=lambda m, name=name: f"grad of {name}: {m}")


def test_dt_limit_and_hdim_skip():
    inp = make_inputs(2, 23, 4, 3, 1, 4)
    limit = (0.05, 0.3)
    y = ssd_scan_ref(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 8, D=inp["D"], dt_bias=inp["dt_bias"], dt_limit=limit)
    y0, _ = recurrence(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], inp["D"], inp["dt_bias"], dt_limit=limit)
    torch.testing.assert_close(y, y0, rtol=1e-10, atol=1e-10)
    # D per channel [h, p] equals D per head broadcast over p
    y_hp = ssd_scan_ref(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 8, D=inp["D"][:, None].expand(4, 3),
                        dt_bias=inp["dt_bias"], dt_limit=limit)
    torch.testing.assert_close(y_hp, y)


def test_seq_idx_equals_separate_runs():
    lengths = [7, 20, 1, 13]
    l = sum(lengths)
    inp = make_inputs(1, l, 4, 3, 2, 5)
    seq = torch.repeat_interleave(torch.arange(len(lengths), dtype=torch.int32) + 3, torch.tensor(lengths))[None]
    y, s = ssd_scan_ref(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 8, D=inp["D"], dt_bias=inp["dt_bias"],
                        seq_idx=seq, return_final_state=True)
    start = 0
    for length in lengths:
        part = {k: (v[:, start:start + length] if v.dim() > 1 else v) for k, v in inp.items()}
        yp, sp = ssd_scan_ref(part["x"], part["dt"], part["A"], part["B"], part["C"], 8, D=part["D"],
                              dt_bias=part["dt_bias"], return_final_state=True)
        torch.testing.assert_close(y[:, start:start + length], yp, rtol=1e-12, atol=1e-12)
        start += length
    torch.testing.assert_close(s, sp, rtol=1e-12, atol=1e-12)  # final state = the last sample's


@pytest.mark.parametrize("pieces", [[50], [1, 49], [16, 16, 18], [3, 5, 7, 11, 24], [31, 1, 1, 17]])
def test_streaming_in_pieces_equals_one_pass(pieces):
    l = sum(pieces)
    inp = make_inputs(2, l, 4, 3, 2, 5, dtype=torch.float32)
    seq = torch.tensor([[0] * 20 + [1] * 30, [0] * 50], dtype=torch.int32)
    kw = dict(D=inp["D"], dt_bias=inp["dt_bias"])
    y, s = ssd_scan_ref(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 8, seq_idx=seq, return_final_state=True, **kw)
    state, outs, start = None, [], 0
    for size in pieces:
        sl = slice(start, start + size)
        yp, state = ssd_scan_ref(inp["x"][:, sl], inp["dt"][:, sl], inp["A"], inp["B"][:, sl], inp["C"][:, sl], 8,
                                 seq_idx=seq[:, sl], initial_state=state, return_final_state=True, **kw)
        outs.append(yp)
        start += size
    torch.testing.assert_close(torch.cat(outs, 1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, s, rtol=1e-5, atol=1e-5)


def test_chunk_size_does_not_change_the_result():
    inp = make_inputs(2, 45, 4, 3, 1, 6)
    seq = random_seq_idx(2, 45, 3)
    ys = [ssd_scan_ref(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], q, D=inp["D"], dt_bias=inp["dt_bias"], seq_idx=seq)
          for q in (1, 4, 16, 256)]
    for y in ys[1:]:
        torch.testing.assert_close(y, ys[0], rtol=1e-10, atol=1e-10)


def test_low_precision_inputs_keep_dtype_and_float32_state():
    inp = make_inputs(1, 30, 2, 4, 1, 4, dtype=torch.bfloat16)
    y, s = ssd_scan(inp["x"], inp["dt"], inp["A"].float(), inp["B"], inp["C"], 8, D=inp["D"], dt_bias=inp["dt_bias"],
                    return_final_state=True)
    assert y.dtype == torch.bfloat16 and s.dtype == torch.float32
    ref = {k: v.double() for k, v in inp.items()}
    y0, _ = recurrence(ref["x"], ref["dt"], ref["A"], ref["B"], ref["C"], ref["D"], ref["dt_bias"])
    torch.testing.assert_close(y.double(), y0, rtol=2e-2, atol=2e-2)


def test_bad_inputs_raise_clear_errors():
    inp = make_inputs(1, 10, 4, 3, 3, 5)
    with pytest.raises(ValueError, match="not divisible"):
        ssd_scan_ref(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 8)
    inp = make_inputs(1, 10, 4, 3, 2, 5)
    with pytest.raises(ValueError, match="seq_idx shape"):
        ssd_scan_ref(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 8, seq_idx=torch.zeros(1, 9, dtype=torch.int32))
    with pytest.raises(ValueError, match="unknown backend"):
        ssd_scan(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 8, backend="triton")
    with pytest.raises(RuntimeError, match="Install"):
        ssd_scan(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], 8, backend="fast")  # CPU tensors
