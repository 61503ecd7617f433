"""Mamba-2 across the ranks of a context-parallel group, exactly (docs/context_parallel.md).

The video stream of each batch row is cut along time into contiguous slices, one per rank (rank order = time
order). Per head, with the decay a_t = exp(dt_t A) and state S [headdim P, d_state N] (vamba/ops/ssd.py):

    S_t = a_t S_{t-1} + dt_t x_t B_t^T,      y_t = S_t C_t + D x_t

is linear in the state that enters a slice. Each rank scans its slice from a zero state (any kernel), which
gives y0_t and the final state S0; the state entering rank r is then

    S_in(r) = sum_{j < r} c_{r,j} S0(j),   c_{r,j} = prod_{j < k < r} G(k)       (0 across a sample boundary)

where G(k) = exp(sum_{t in slice k} dt_t A) is slice k's total decay, c = 0 across a sample boundary, and

    y_t = y0_t + exp(sum_{s <= t} dt_s A) C_t . S_in(r)      for the tokens of the slice's first sample.

The correction is added to y BEFORE the gated RMSNorm (out = out_proj(rmsnorm(y * silu(z)))), so it is exact.
All ranks scan at once; they exchange only (S0, G) per row (an all-gather of B x H x P x N + B x H numbers) and
every rank forms its own prefix combination (``incoming_coefficients``). The causal conv (width W) needs the W - 1
inputs before the slice: ranks all-gather the last W - 1 conv INPUTS of their slices before the conv runs
(``history_selector`` picks them, also through ranks that hold fewer than W - 1 tokens). Packed samples
(``seq``: sample id per token, nondecreasing) reset both states: an id that changes kills what came before.

Padding: a row's local tokens come first, padding after (``valid`` False). Padding gets dt = 0 (decay 1, no
input), so the state after it is the state after the row's last real token, and the mixer's output is zeroed
there. The functions below are pure (gathered tensors in, no communication) so that one process can test the
math; ``mixer_forward`` binds them to a group through a ``VideoShard`` (vamba.parallel.shard).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vamba.models.mamba2 import Mamba2Mixer, project
from vamba.ops import causal_conv1d, ssd_scan

_INF = float("inf")


def incoming_coefficients(decay: Tensor, first: Tensor, last: Tensor, count: Tensor, rank: int) -> Tensor:
    """Weights of every rank's zero-start final state in the state entering ``rank``'s slice.

    decay: [R, B, H] total decay G of each rank's slice; first / last: [R, B] sample id of each slice's first /
    last token; count: [R, B] real tokens per slice (an empty slice passes the state on unchanged).
    Returns c [R, B, H] with S_in = sum_j c[j] S0[j]: c[j] = prod_{j<k<rank} G(k) when slice j ends in the sample
    that ``rank``'s slice starts with, else 0. (Sample ids are nondecreasing, so that one test also rules out a
    boundary anywhere in between.) c[j] = 0 for j >= rank is kept in the graph on purpose: every rank must run
    the backward of the all-gather that produced ``decay``.
    """
    R, B, H = decay.shape
    coef = [decay.new_zeros(B, H) for _ in range(R)]
    running = decay.new_ones(B, H)  # product of the decays of the slices between j and rank
    for j in range(rank - 1, -1, -1):
        reaches = (count[j] > 0) & (first[rank] == last[j])
        coef[j] = running * reaches[:, None].to(decay.dtype)
        running = running * decay[j]  # an empty slice has decay 1 (its padding has dt = 0)
    return torch.stack(coef)


def history_selector(tail_valid: Tensor, tail_seq: Tensor, first: Tensor, rank: int, dtype: torch.dtype) -> Tensor:
    """One-hot map from all ranks' conv tails to the W - 1 inputs before ``rank``'s slice.

    tail_valid / tail_seq: [R, B, W-1] which of each slice's last W - 1 positions hold real inputs, and their
    sample ids; first: [B] sample id of ``rank``'s first token. Returns [B, R*(W-1), W-1]: history[:, :, s] =
    sum_e tails[:, e, :] * map[:, e, s], slot W-2 the input right before the slice. Inputs of another sample
    than ``first`` map to nothing (the conv must not read across a sample boundary).
    """
    R, B, W1 = tail_valid.shape
    before = (torch.arange(R, device=tail_valid.device) < rank)[:, None, None]
    valid = (tail_valid & before).permute(1, 0, 2).reshape(B, R * W1)
    seq = tail_seq.permute(1, 0, 2).reshape(B, R * W1)
    from_end = valid.flip(-1).long().cumsum(-1).flip(-1)  # real inputs at or after each entry
    slot = W1 - from_end  # W-2 for the last real input, W-3 for the one before, ...
    keep = valid & (slot >= 0) & (seq == first[:, None])
    return F.one_hot(slot.clamp(0, W1 - 1), W1).to(dtype) * keep[..., None].to(dtype)


def state_correction(C: Tensor, log_decay: Tensor, state: Tensor, first_run: Tensor) -> Tensor:
    """The incoming state's contribution to y: exp(log_decay_t) C_t . state on the slice's first sample.

    C: [B, L, G, N]; log_decay: [B, L, H] inclusive cumulative sum of dt_t A from the slice start; state:
    [B, H, P, N]; first_run: [B, L] bool, tokens of the first sample (before any reset). Returns [B, L, H, P]
    in the state's dtype. Only the prefix up to the longest first run is computed.
    """
    B, L, G, N = C.shape
    H, P = state.shape[1], state.shape[2]
    run = int(first_run.sum(1).max()) if first_run.numel() else 0
    out = state.new_zeros(B, L, H, P)
    if run == 0:
        return out + 0 * state.sum()  # keep the state in the graph (the collective's backward must run)
    c = C[:, :run].to(state.dtype)
    y = torch.einsum("blgn,bgkpn->blgkp", c, state.view(B, G, H // G, P, N)).reshape(B, run, H, P)
    weight = torch.exp(log_decay[:, :run]) * first_run[:, :run, None].to(state.dtype)
    return torch.cat([y * weight[..., None], out[:, run:]], dim=1)


class _AddStateCorrection(torch.autograd.Function):
    """y0 + ``state_correction(C, log_decay, state, first_run)`` in y0's dtype, computed in pieces of ``chunk``
    tokens and recomputed in backward: only C, log_decay and the state are kept (at 7B and 150k local tokens the
    correction alone is 4.4 GB in float32, as large as the scan's output)."""

    @staticmethod
    def forward(ctx, y0: Tensor, C: Tensor, log_decay: Tensor, state: Tensor, first_run: Tensor,
                chunk: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(C, log_decay, state, first_run)
        ctx.chunk = chunk
        run = int(first_run.sum(1).max()) if first_run.numel() else 0
        out = y0.clone()
        for a in range(0, run, chunk):
            b = min(a + chunk, run)
            corr = state_correction(C[:, a:b], log_decay[:, a:b], state, first_run[:, a:b])
            out[:, a:b] = (y0[:, a:b].to(state.dtype) + corr).to(y0.dtype)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        C, log_decay, state, first_run = ctx.saved_tensors
        B, L, G, N = C.shape
        H, P = state.shape[1], state.shape[2]
        run = int(first_run.sum(1).max()) if first_run.numel() else 0
        d_C = torch.zeros_like(C)
        d_log = torch.zeros_like(log_decay)
        d_state = torch.zeros_like(state)
        s = state.view(B, G, H // G, P, N)
        for a in range(0, run, ctx.chunk):
            b = min(a + ctx.chunk, run)
            c = C[:, a:b].to(state.dtype)
            e = torch.exp(log_decay[:, a:b]) * first_run[:, a:b, None].to(state.dtype)  # [B, l, H]
            g = grad[:, a:b].to(state.dtype).view(B, b - a, G, H // G, P)
            cs = torch.einsum("blgn,bgkpn->blgkp", c, s)
            d_log[:, a:b] = (g * cs).sum(-1).reshape(B, b - a, H) * e
            ge = g * e.view(B, b - a, G, H // G, 1)
            d_C[:, a:b] = torch.einsum("blgkp,bgkpn->blgn", ge, s).to(C.dtype)
            d_state += torch.einsum("blgkp,blgn->bgkpn", ge, c).reshape(B, H, P, N)
        return grad, d_C, d_log, d_state, None, None


def add_state_correction(y0: Tensor, C: Tensor, log_decay: Tensor, state: Tensor, first_run: Tensor,
                         chunk: int = 8192) -> Tensor:
    """y0 [B, L, H, P] + the incoming state's contribution (``state_correction``), memory-lean (recomputed in
    backward, ``chunk`` tokens at a time); returned in y0's dtype. Every rank runs it, also with nothing to add,
    so that the state stays in the graph (its all-gather's backward runs everywhere)."""
    return _AddStateCorrection.apply(y0, C, log_decay, state, first_run, chunk)


def mixer_forward(mixer: Mamba2Mixer, x: Tensor, shard) -> Tensor:
    """``Mamba2Mixer.forward`` on this rank's slice of the video stream, exact across the group.

    x: [B, L, d_model] local tokens; ``shard``: a ``vamba.parallel.shard.VideoShard`` (layout + group).
    Returns [B, L, d_model], zero on padding.
    """
    c = mixer.config
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    z, xbc, dt = project(mixer.in_proj, x).split([c.d_inner, c.conv_dim, c.nheads], dim=-1)
    history = shard.conv_history(xbc, c.d_conv)  # [B, conv_dim, W-1], exchanged before the conv
    xbc = causal_conv1d(xbc.transpose(1, 2), mixer.conv1d.weight[:, 0], mixer.conv1d.bias, seq_idx=shard.seq,
                        initial_state=history, activation="silu", backend=c.backend)
    xs, B, C = xbc.transpose(1, 2).split([c.d_inner, c.ngroups * c.d_state, c.ngroups * c.d_state], dim=-1)
    A = -torch.exp(mixer.A_log.float())  # as Mamba2Mixer.forward (float32 even for float64 weights)
    # dt as the scan would compute it, then 0 on padding (decay 1, no input: the state passes unchanged)
    dt = F.softplus(dt.to(work) + mixer.dt_bias.to(work))
    if c.dt_limit != (0.0, _INF):
        dt = dt.clamp(c.dt_limit[0], c.dt_limit[1])
    dt = dt * shard.valid[..., None].to(work)
    B, C = B.unflatten(-1, (c.ngroups, c.d_state)), C.unflatten(-1, (c.ngroups, c.d_state))
    y, final = ssd_scan(xs.unflatten(-1, (c.nheads, c.headdim)), dt, A, B, C, c.chunk_size, D=mixer.D,
                        dt_bias=None, dt_softplus=False, seq_idx=shard.seq, return_final_state=True,
                        backend=c.backend)
    log_decay = torch.cumsum(dt * A, dim=1)  # [B, L, H]
    decay = torch.exp(log_decay[:, -1])  # whole-slice decay G
    incoming = shard.incoming_state(final.to(work), decay)  # [B, H, P, N]
    y = add_state_correction(y, C, log_decay, incoming, shard.first_run)
    out = project(mixer.out_proj, mixer.norm(y.flatten(-2), z))
    return out * shard.valid[..., None].to(out.dtype)
