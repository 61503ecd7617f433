"""SSD chunked scan (Mamba-2's selective state space layer, Dao & Gu 2024, "Transformers are SSMs").

Per head h, with scalar decay a_t = exp(dt_t * A_h) (paper: A_t = a_t * I):

    state_t = a_t * state_{t-1} + dt_t * x_t B_t^T        state: [headdim P, d_state N]
    y_t     = state_t C_t + D_h * x_t

``seq_idx`` marks packed samples: where it changes the state restarts from zero. ``initial_state``
continues the first sample of each row (streaming), and the final state is the state after the last token.

``ssd_scan`` runs mamba-ssm's Triton ``mamba_chunk_scan_combined`` on CUDA when available, else
``ssd_scan_ref``: the same block decomposition in PyTorch (intra-chunk quadratic form, inter-chunk
state passing), computed in float32 (or the input's float64) and always differentiable.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vamba.ops._backend import compact, resolve, token_pieces

_INF = float("inf")


def _check(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, seq_idx: Tensor | None,
           initial_state: Tensor | None) -> None:
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    if dt.shape != (b, l, h) or A.shape != (h,) or B.shape != (b, l, g, n) or C.shape != B.shape:
        raise ValueError(f"ssd_scan: shapes x{tuple(x.shape)} dt{tuple(dt.shape)} A{tuple(A.shape)} "
                         f"B{tuple(B.shape)} C{tuple(C.shape)} do not fit x[b,l,h,p] dt[b,l,h] A[h] B,C[b,l,g,n]")
    if h % g:
        raise ValueError(f"ssd_scan: {h} heads are not divisible into {g} groups")
    if chunk_size < 1:
        raise ValueError(f"ssd_scan: chunk_size must be positive, got {chunk_size}")
    if seq_idx is not None and seq_idx.shape != (b, l):
        raise ValueError(f"ssd_scan: seq_idx shape {tuple(seq_idx.shape)} != (batch, seqlen) {(b, l)}")
    if initial_state is not None and initial_state.shape != (b, h, p, n):
        raise ValueError(f"ssd_scan: initial_state shape {tuple(initial_state.shape)} != {(b, h, p, n)}")


def ssd_scan_ref(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 256,
    D: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = True,
    dt_limit: tuple[float, float] = (0.0, _INF),
    seq_idx: Tensor | None = None,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked SSD scan in PyTorch (the reference; also the CPU path).

    Args:
        x: [b, l, h, p] inputs per head (paper X, P = headdim).
        dt: [b, l, h] raw step sizes (paper Delta); ``dt_bias`` then softplus then ``dt_limit`` clamp.
        A: [h] negative decay rates (``-exp(A_log)``).
        B, C: [b, l, g, n] input / output projections shared by the h/g heads of each group (N = d_state).
        chunk_size: Q, length of the blocks of the decomposition; l need not be a multiple of it.
        D: [h] or [h, p] skip connection.
        seq_idx: [b, l] integer sample index, nondecreasing along each row; the state resets where it changes.
        initial_state: [b, h, p, n] state before the first token (continues the row's first sample).
        return_final_state: also return the [b, h, p, n] state after the last token (float32).

    Returns:
        y [b, l, h, p] in x's dtype, and the final state when asked.
    """
    _check(x, dt, A, B, C, chunk_size, seq_idx, initial_state)
    out_dtype = x.dtype
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    x, dt, A, B, C = (t.to(work) for t in (x, dt, A, B, C))
    if dt_bias is not None:
        dt = dt + dt_bias.to(work)
    if dt_softplus:
        dt = F.softplus(dt)
    if dt_limit != (0.0, _INF):
        dt = dt.clamp(dt_limit[0], dt_limit[1])
    seq = torch.zeros(b, l, dtype=torch.long, device=x.device) if seq_idx is None else seq_idx.long()

    # Pad to whole chunks. Padded steps have dt = 0: decay 1 and no input, so the state passes unchanged.
    q = chunk_size
    pad = -l % q
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
        seq = torch.cat([seq, seq[:, -1:].expand(b, pad)], dim=1)
    c = (l + pad) // q
    x = x.view(b, c, q, h, p)
    dt = dt.view(b, c, q, h)
    # Heads share their group's B and C: expand groups to heads (clear, not memory-lean; this is the reference).
    B = B.view(b, c, q, g, n).repeat_interleave(h // g, dim=3)
    C = C.view(b, c, q, g, n).repeat_interleave(h // g, dim=3)
    seq = seq.view(b, c, q)

    a_cum = torch.cumsum(dt * A, dim=2)  # [b, c, q, h]: log of the decay from the chunk start to each step
    dtx = dt[..., None] * x  # [b, c, q, h, p]

    # 1) Within a chunk: y_i += sum_{j<=i, same sample} (C_i . B_j) exp(a_cum_i - a_cum_j) dt_j x_j
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    same = (seq[:, :, :, None] == seq[:, :, None, :]) & causal  # [b, c, q_i, q_j]
    log_decay = a_cum[:, :, :, None, :] - a_cum[:, :, None, :, :]  # [b, c, q_i, q_j, h]
    # NOTE: mask before exp; the masked entries (j > i) are positive and could overflow.
    decay = torch.exp(log_decay.masked_fill(~same[..., None], -_INF))
    scores = torch.einsum("bcihn,bcjhn->bcijh", C, B) * decay
    y = torch.einsum("bcijh,bcjhp->bcihp", scores, dtx)

    # 2) Each chunk's own contribution to the state at its end (only its last sample's steps count).
    to_end = torch.exp(a_cum[:, :, -1:, :] - a_cum) * (seq == seq[:, :, -1:])[..., None]  # [b, c, q, h]
    chunk_states = torch.einsum("bcjh,bcjhn,bcjhp->bchpn", to_end, B, dtx)

    # 3) Pass states from chunk to chunk; a sample boundary inside a chunk drops the incoming state.
    state = x.new_zeros(b, h, p, n) if initial_state is None else initial_state.to(work)
    seq_in = seq[:, 0, 0]  # sample that the state entering the current chunk belongs to
    entering = []
    for k in range(c):
        entering.append(state)
        seq_end = seq[:, k, -1]
        keep = (seq_end == seq_in).to(work)[:, None, None, None]
        state = state * torch.exp(a_cum[:, k, -1, :])[:, :, None, None] * keep + chunk_states[:, k]
        seq_in = seq_end
    states_in = torch.stack(entering, dim=1)  # [b, c, h, p, n]

    # 4) The entering state's contribution: y_i += exp(a_cum_i) C_i . state_in, for steps of its sample.
    seq_prev = torch.cat([seq[:, :1, 0], seq[:, :-1, -1]], dim=1)[:, :, None]  # [b, c, 1]
    from_start = torch.exp(a_cum) * (seq == seq_prev)[..., None]  # [b, c, q, h]
    y = y + torch.einsum("bcihn,bchpn,bcih->bcihp", C, states_in, from_start)

    if D is not None:
        y = y + x * (D.to(work)[:, None] if D.dim() == 1 else D.to(work))
    y = y.reshape(b, c * q, h, p)[:, :l].to(out_dtype)
    if return_final_state:
        return y, state.float() if work == torch.float32 else state
    return y


def _row_relative(seq_idx: Tensor) -> Tensor:
    """seq_idx with each row's first sample renumbered 0.

    NOTE: mamba-ssm's kernels attach the initial state to sample index 0; ours attaches it to the row's
    first sample (what streaming needs), so the fast path renumbers rows to start at 0.
    """
    return (seq_idx - seq_idx[:, :1]).to(torch.int32).contiguous()


def ssd_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 256,
    D: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = True,
    dt_limit: tuple[float, float] = (0.0, _INF),
    seq_idx: Tensor | None = None,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """SSD scan: mamba-ssm's Triton ``mamba_chunk_scan_combined`` or ``ssd_scan_ref`` (same arguments).

    backend: ``auto`` (the kernel for CUDA inputs when installed), ``fast`` (the kernel or an error),
    ``reference``. The final state is returned in float32 by both paths.
    """
    kernel = resolve("ssd_scan", backend, "mamba_ssm.ops.triton.ssd_combined", x)
    if kernel is None:
        return ssd_scan_ref(x, dt, A, B, C, chunk_size, D, dt_bias, dt_softplus, dt_limit, seq_idx,
                            initial_state, return_final_state)
    _check(x, dt, A, B, C, chunk_size, seq_idx, initial_state)
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    # per token: x / y / dout (h p), chunk states (h p n / chunk), C.B^T blocks (g chunk)
    pieces = token_pieces(l, b * max(h * p, h * p * n // chunk_size, g * chunk_size), chunk_size)
    ys, state = [], initial_state
    for piece in pieces:
        seq = None if seq_idx is None else seq_idx[:, piece]
        if piece.start and seq is not None and state is not None:  # a sample starting right at the cut
            state = state * (seq_idx[:, piece.start] == seq_idx[:, piece.start - 1]).to(state.dtype)[:, None, None, None]
        out = kernel.mamba_chunk_scan_combined(
            compact(x[:, piece]), compact(dt[:, piece]), A, compact(B[:, piece]), compact(C[:, piece]), chunk_size,
            D=D, dt_bias=dt_bias,
            initial_states=state, seq_idx=None if seq is None else _row_relative(seq), dt_softplus=dt_softplus,
            dt_limit=dt_limit, return_final_states=return_final_state or len(pieces) > 1)
        if isinstance(out, tuple):
            out, state = out
            state = state.float()
        ys.append(out)
    y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=1)
    return (y, state) if return_final_state else y

