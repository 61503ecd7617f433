"""The state-passing math of context parallelism, in one process (float64): slices scanned from zero and
combined (vamba.parallel.mamba) against the one-shot scan and conv of the whole sequence, forward and backward.

Each case cuts every row at its own points (mid-sample, on a sample boundary, empty slices, slices shorter than
the conv's W - 1); slices are padded to a common length after their real tokens, as the model lays them out."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vamba.ops import causal_conv1d_ref, ssd_scan_ref
from vamba.parallel.mamba import add_state_correction, history_selector, incoming_coefficients, state_correction

F64 = torch.float64


def _slices(cuts: list[list[int]], length: int) -> list[list[tuple[int, int]]]:
    """Per rank, per row: (start, end) of the row's slice; cuts[b] = the row's R - 1 cut points."""
    ranks = len(cuts[0]) + 1
    out = []
    for r in range(ranks):
        row = []
        for b_cuts in cuts:
            bounds = [0, *b_cuts, length]
            row.append((bounds[r], bounds[r + 1]))
        out.append(row)
    return out


def _local(t: torch.Tensor, spans: list[tuple[int, int]], width: int, fill=0) -> torch.Tensor:
    """Rows' slices of t [B, L, ...] left-aligned in [B, width, ...], ``fill`` after them."""
    out = torch.full((t.shape[0], width, *t.shape[2:]), fill, dtype=t.dtype)
    for b, (s, e) in enumerate(spans):
        out[b, : e - s] = t[b, s:e]
    return out


def _seq_idx(bounds: list[list[int]], length: int) -> torch.Tensor:
    """[B, L] int32 sample ids from each row's sample start positions (besides 0)."""
    seq = torch.zeros(len(bounds), length, dtype=torch.int32)
    for b, starts in enumerate(bounds):
        for s in starts:
            seq[b, s:] += 1
    return seq


CASES = {
    # rows: cut points per row (R - 1 each), sample starts per row
    "one_video_mid_sample": dict(length=37, cuts=[[12, 25]], starts=[[]]),
    "packed_boundaries_inside_and_at_cuts": dict(length=40, cuts=[[10, 10, 27], [3, 20, 21]],
                                                 starts=[[10, 15], [2, 21, 30]]),
    "short_and_empty_slices": dict(length=23, cuts=[[1, 2, 2, 9], [0, 0, 1, 22]], starts=[[5], [1]]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sharded_scan_equals_one_shot_scan(case: str) -> None:
    spec = CASES[case]
    L, h, p, g, n, chunk = spec["length"], 4, 3, 2, 5, 8
    B = len(spec["cuts"])
    gen = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=F64)  # noqa: E731
    x, dt, Bm, Cm = r(B, L, h, p), r(B, L, h) - 1.0, r(B, L, g, n), r(B, L, g, n)
    A, D, dt_bias = -torch.rand(h, generator=gen, dtype=F64) * 2 - 0.1, r(h), r(h) * 0.5
    leaves = [x, dt, Bm, Cm, A, D, dt_bias]
    for t in leaves:
        t.requires_grad_(True)
    seq = _seq_idx(spec["starts"], L)
    y_ref = ssd_scan_ref(x, dt, A, Bm, Cm, chunk, D=D, dt_bias=dt_bias, seq_idx=seq)
    weight = r(B, L, h, p)
    g_ref = torch.autograd.grad((y_ref * weight).sum(), leaves)

    slices = _slices(spec["cuts"], L)
    width = max(1, max(e - s for rank in slices for s, e in rank))
    dt_full = F.softplus(dt + dt_bias)
    locals_, finals, decays, firsts, lasts, counts = [], [], [], [], [], []
    for spans in slices:
        valid = _local(torch.ones(B, L, dtype=torch.bool), spans, width, False)
        seq_pad = torch.stack([torch.cat([seq[b, s:e], seq[b, max(e - 1, 0):max(e, 1)].expand(width - (e - s))])
                               for b, (s, e) in enumerate(spans)])  # padding continues the last id
        dtl = _local(dt_full, spans, width) * valid[..., None]
        Cl = _local(Cm, spans, width)
        y0, final = ssd_scan_ref(_local(x, spans, width), dtl, A, _local(Bm, spans, width), Cl, chunk, D=D,
                                 dt_bias=None, dt_softplus=False, seq_idx=seq_pad, return_final_state=True)
        log_decay = torch.cumsum(dtl * A, dim=1)
        first, last = seq_pad[:, 0].long(), seq_pad[:, -1].long()
        decays.append(torch.exp(log_decay[:, -1]))
        finals.append(final)
        firsts.append(first)
        lasts.append(last)
        counts.append(valid.sum(1))
        locals_.append((spans, y0, Cl, log_decay, valid & (seq_pad == first[:, None])))
    decay, final = torch.stack(decays), torch.stack(finals)
    first, last, count = torch.stack(firsts), torch.stack(lasts), torch.stack(counts)
    y = torch.zeros_like(y_ref)
    for rank, (spans, y0, Cl, log_decay, first_run) in enumerate(locals_):
        coef = incoming_coefficients(decay, first, last, count, rank)
        incoming = torch.einsum("rbh,rbhpn->bhpn", coef, final)
        y_rank = y0 + state_correction(Cl, log_decay, incoming, first_run)
        for b, (s, e) in enumerate(spans):
            y = y.index_put((torch.tensor([b]), torch.arange(s, e)), y_rank[b, : e - s])
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    for got, want in zip(torch.autograd.grad((y * weight).sum(), leaves), g_ref):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("case", sorted(CASES))
def test_exchanged_conv_tails_equal_the_one_shot_conv(case: str) -> None:
    spec = CASES[case]
    L, C, width_conv = spec["length"], 6, 4
    B = len(spec["cuts"])
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(B, L, C, generator=gen, dtype=F64, requires_grad=True)
    w = torch.randn(C, width_conv, generator=gen, dtype=F64, requires_grad=True)
    bias = torch.randn(C, generator=gen, dtype=F64, requires_grad=True)
    seq = _seq_idx(spec["starts"], L)
    ref = causal_conv1d_ref(x.transpose(1, 2), w, bias, seq_idx=seq)
    weight = torch.randn(ref.shape, generator=gen, dtype=F64)
    g_ref = torch.autograd.grad((ref * weight).sum(), [x, w, bias])

    slices = _slices(spec["cuts"], L)
    width = max(1, max(e - s for rank in slices for s, e in rank))
    w1 = width_conv - 1
    tails, oks, tail_seqs, firsts = [], [], [], []
    for spans in slices:  # what each rank contributes: its last W-1 real inputs
        count = torch.tensor([e - s for s, e in spans])
        pos = (count[:, None] - w1 + torch.arange(w1)).clamp(min=0)
        ok = count[:, None] - w1 + torch.arange(w1) >= 0
        xl = _local(x, spans, width)
        seql = torch.stack([torch.cat([seq[b, s:e], seq[b, max(e - 1, 0):max(e, 1)].expand(width - (e - s))])
                            for b, (s, e) in enumerate(spans)]).long()
        tails.append(xl.gather(1, pos[..., None].expand(B, w1, C)) * ok[..., None])
        oks.append(ok)
        tail_seqs.append(seql.gather(1, pos.clamp(max=width - 1)))
        firsts.append(seql[:, 0])
    every = torch.stack(tails).permute(1, 0, 2, 3).reshape(B, -1, C)
    out = torch.zeros_like(ref)
    for rank, spans in enumerate(slices):
        selector = history_selector(torch.stack(oks), torch.stack(tail_seqs), firsts[rank], rank, torch.float64)
        history = torch.einsum("bec,bes->bcs", every, selector)
        xl = _local(x, spans, width)
        seql = torch.stack([torch.cat([seq[b, s:e], seq[b, max(e - 1, 0):max(e, 1)].expand(width - (e - s))])
                            for b, (s, e) in enumerate(spans)])
        o = causal_conv1d_ref(xl.transpose(1, 2), w, bias, seq_idx=seql, initial_state=history)
        for b, (s, e) in enumerate(spans):
            out = out.index_put((torch.tensor([b]), torch.arange(C)[:, None], torch.arange(s, e)[None]),
                                o[b, :, : e - s])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(torch.autograd.grad((out * weight).sum(), [x, w, bias]), g_ref):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_memory_lean_correction_equals_the_reference() -> None:
    """``add_state_correction`` (pieces of ``chunk`` tokens, recomputed in backward) against ``state_correction``."""
    gen = torch.Generator().manual_seed(2)
    B, L, G, N, H, P = 3, 23, 2, 5, 4, 3
    y0 = torch.randn(B, L, H, P, generator=gen, dtype=F64, requires_grad=True)
    C = torch.randn(B, L, G, N, generator=gen, dtype=F64, requires_grad=True)
    log_decay = (-torch.rand(B, L, H, generator=gen, dtype=F64)).cumsum(1).requires_grad_(True)
    state = torch.randn(B, H, P, N, generator=gen, dtype=F64, requires_grad=True)
    first_run = torch.arange(L)[None] < torch.tensor([23, 9, 0])[:, None]  # whole, part, none of the slice
    weight = torch.randn(B, L, H, P, generator=gen, dtype=F64)
    leaves = [y0, C, log_decay, state]
    want = y0 + state_correction(C, log_decay, state, first_run)
    got = add_state_correction(y0, C, log_decay, state, first_run, chunk=4)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
    for a, b in zip(torch.autograd.grad((got * weight).sum(), leaves), torch.autograd.grad((want * weight).sum(), leaves)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def kernel_scan_errors(device: torch.device, dtype: torch.dtype, backend: str, length: int, cuts: list[int],
                       starts: list[int], h: int, p: int, n: int, chunk: int) -> dict[str, float]:
    """One row cut at ``cuts`` (packed samples starting at ``starts``), through the ops of ``backend`` (``fast``:
    mamba-ssm's chunked scan and causal-conv1d, tests/gpu/test_context_parallel_gpu.py): relative errors of

    - ``sharded_vs_one_shot`` / ``grad_<leaf>``: slices scanned from zero and combined (``incoming_coefficients``,
      ``state_correction``) against the one-shot scan of the whole row, output and gradients;
    - ``initial_states_vs_one_shot``: the kernel itself continued from each slice's incoming state;
    - ``conv_sharded_vs_one_shot``: the conv of each slice with the exchanged tails (``history_selector``).
    NaN where a result is not finite."""
    from vamba.ops import causal_conv1d, ssd_scan

    g = torch.Generator(device="cpu").manual_seed(0)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype).requires_grad_(True)

    def err(a, b):
        return rel(a, b) if a.isfinite().all() else float("nan")

    x, dt, B, C = r(1, length, h, p), r(1, length, h, scale=0.5), r(1, length, 1, n), r(1, length, 1, n)
    A = (-torch.rand(h, generator=g) * 4 - 0.5).to(device).requires_grad_(True)
    D = r(h).float().detach().requires_grad_(True)
    dt_bias = (torch.rand(h, generator=g) - 2).to(device).requires_grad_(True)
    seq = torch.zeros(1, length, dtype=torch.int32, device=device)
    for s in starts:
        seq[:, s:] += 1
    leaves = [x, dt, B, C, A, D, dt_bias]
    weight = torch.randn(1, length, h, p, generator=g).to(device)
    one = ssd_scan(x, dt, A, B, C, chunk, D=D, dt_bias=dt_bias, seq_idx=seq, backend=backend)
    g_one = torch.autograd.grad((one.float() * weight).sum(), leaves)

    bounds = [0, *cuts, length]
    dtp = F.softplus(dt.float() + dt_bias.float())
    finals, decays, firsts, lasts, counts, parts = [], [], [], [], [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        y0, final = ssd_scan(x[:, a:b], dtp[:, a:b], A, B[:, a:b], C[:, a:b], chunk, D=D, dt_bias=None,
                             dt_softplus=False, seq_idx=seq[:, a:b], return_final_state=True, backend=backend)
        log_decay = torch.cumsum(dtp[:, a:b] * A, dim=1)
        finals.append(final)
        decays.append(torch.exp(log_decay[:, -1]))
        firsts.append(seq[:, a].long())
        lasts.append(seq[:, b - 1].long())
        counts.append(torch.full((1,), b - a, device=device))
        parts.append((a, b, y0, log_decay))
    final, decay = torch.stack(finals), torch.stack(decays)
    first, last, count = torch.stack(firsts), torch.stack(lasts), torch.stack(counts)
    ys, cont = [], []
    for rank, (a, b, y0, log_decay) in enumerate(parts):
        incoming = torch.einsum("rbh,rbhpn->bhpn", incoming_coefficients(decay, first, last, count, rank), final)
        first_run = seq[:, a:b] == seq[:, a:a + 1]
        ys.append((y0.float() + state_correction(C[:, a:b], log_decay, incoming, first_run)).to(dtype))
        cont.append(ssd_scan(x[:, a:b], dtp[:, a:b], A, B[:, a:b], C[:, a:b], chunk, D=D, dt_bias=None,
                             dt_softplus=False, seq_idx=seq[:, a:b], initial_state=incoming.detach(), backend=backend))
    sharded = torch.cat(ys, 1)
    g_sharded = torch.autograd.grad((sharded.float() * weight).sum(), leaves)
    out = {"sharded_vs_one_shot": err(sharded, one), "initial_states_vs_one_shot": err(torch.cat(cont, 1), one)}
    out.update({f"grad_{name}": err(a, b) for name, a, b in zip(("x", "dt", "B", "C", "A", "D", "dt_bias"),
                                                                g_sharded, g_one)})

    width, ch = 4, 256
    xc = r(1, length, ch)
    wc, bc = r(ch, width).detach(), r(ch).detach()
    conv_one = causal_conv1d(xc.transpose(1, 2), wc, bc, seq_idx=seq, backend=backend)
    tails, oks, tail_seqs = [], [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        pos = torch.arange(b - width + 1, b, device=device).clamp(min=a)
        ok = torch.arange(b - width + 1, b, device=device) >= a
        tails.append(xc[:, pos] * ok[None, :, None])
        oks.append(ok[None])
        tail_seqs.append(seq[:, pos].long())
    every = torch.stack(tails).permute(1, 0, 2, 3).reshape(1, -1, ch)
    conv = []
    for rank, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        sel = history_selector(torch.stack(oks), torch.stack(tail_seqs), seq[:, a].long(), rank, every.dtype)
        history = torch.einsum("bec,bes->bcs", every, sel)
        conv.append(causal_conv1d(xc[:, a:b].transpose(1, 2), wc, bc, seq_idx=seq[:, a:b], initial_state=history,
                                  backend=backend))
    out["conv_sharded_vs_one_shot"] = err(torch.cat(conv, -1), conv_one)
    return out


def test_kernel_scan_errors_on_the_reference_ops() -> None:
    """The GPU test's comparison (mamba-ssm there) on the reference ops, float32: it cannot rot unseen."""
    errors = kernel_scan_errors(torch.device("cpu"), torch.float32, "reference", length=300, cuts=[100, 215],
                                starts=[75, 215], h=4, p=16, n=16, chunk=32)
    assert all(e < 1e-5 for e in errors.values()), errors
