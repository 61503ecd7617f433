"""Depthwise causal conv1d + SiLU over Mamba-2's [x, B, C] channels (paper: the short convolution).

    out[:, d, t] = act(bias[d] + sum_k weight[d, k] * x[:, d, t - (w - 1) + k])

Inputs before the row start come from ``initial_state`` (zeros when absent); inputs from an earlier
packed sample (``seq_idx`` differs) count as zero, so nothing leaks across samples. The final state is
the last w - 1 inputs, zeroed where they belong to an earlier sample than the last token's, so that a
next chunk continues the last sample exactly.

``causal_conv1d`` runs the causal-conv1d CUDA kernel on CUDA when installed, else ``causal_conv1d_ref``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vamba.ops._backend import resolve, token_pieces, too_wide

ACTIVATIONS = (None, "silu")


def _check(x: Tensor, weight: Tensor, seq_idx: Tensor | None, initial_state: Tensor | None, activation: str | None) -> None:
    b, d, l = x.shape
    if weight.dim() != 2 or weight.shape[0] != d:
        raise ValueError(f"causal_conv1d: weight shape {tuple(weight.shape)} != (dim {d}, width)")
    if seq_idx is not None and seq_idx.shape != (b, l):
        raise ValueError(f"causal_conv1d: seq_idx shape {tuple(seq_idx.shape)} != (batch, seqlen) {(b, l)}")
    if initial_state is not None and initial_state.shape != (b, d, weight.shape[1] - 1):
        raise ValueError(f"causal_conv1d: initial_state shape {tuple(initial_state.shape)} != {(b, d, weight.shape[1] - 1)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"causal_conv1d: activation must be one of {ACTIVATIONS}, got {activation!r}")


def _extend(x: Tensor, seq_idx: Tensor | None, initial_state: Tensor | None, width: int) -> tuple[Tensor, Tensor | None]:
    """x with its w - 1 inputs of history prepended [b, d, w-1+l], and seq_idx extended alike (history
    belongs to the row's first sample)."""
    b, d, _ = x.shape
    history = x.new_zeros(b, d, width - 1) if initial_state is None else initial_state.to(x.dtype)
    x_ext = torch.cat([history, x], dim=-1)
    seq_ext = None if seq_idx is None else torch.cat([seq_idx[:, :1].expand(b, width - 1), seq_idx], dim=1)
    return x_ext, seq_ext


def _final_state(x_ext: Tensor, seq_ext: Tensor | None, width: int) -> Tensor:
    """[b, d, w-1]: the last w - 1 inputs, zeroed where they come from an earlier sample than the last token."""
    state = x_ext[..., x_ext.shape[-1] - (width - 1):]
    if seq_ext is not None:
        tail = seq_ext[:, seq_ext.shape[1] - (width - 1):]
        state = state * (tail == seq_ext[:, -1:])[:, None, :].to(state.dtype)
    return state


def causal_conv1d_ref(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    seq_idx: Tensor | None = None,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    activation: str | None = "silu",
) -> Tensor | tuple[Tensor, Tensor]:
    """Causal depthwise conv1d in PyTorch (reference and CPU path), computed in float32 or float64.

    Args:
        x: [b, d, l] channels (Mamba-2: d = conv_dim = d_inner + 2 * ngroups * d_state).
        weight: [d, w] taps (``conv1d.weight[:, 0]``); bias: [d].
        seq_idx: [b, l] integer sample index, nondecreasing along each row.
        initial_state: [b, d, w-1] the inputs before the row start (continues the row's first sample).
        return_final_state: also return the [b, d, w-1] state after the last token.
        activation: "silu" or None.

    Returns:
        out [b, d, l] in x's dtype, and the final state (x's dtype) when asked.
    """
    _check(x, weight, seq_idx, initial_state, activation)
    width, l = weight.shape[1], x.shape[-1]
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    x_ext, seq_ext = _extend(x.to(work), seq_idx, initial_state, width)
    w = weight.to(work)
    out = torch.zeros_like(x_ext[..., width - 1:]) if bias is None else bias.to(work)[:, None].expand_as(x_ext[..., width - 1:])
    for k in range(width):  # tap k reads the input w - 1 - k steps back
        term = w[:, k, None] * x_ext[..., k:k + l]
        if seq_ext is not None:
            term = term * (seq_ext[:, k:k + l] == seq_idx)[:, None, :].to(work)
        out = out + term
    if activation == "silu":
        out = F.silu(out)
    out = out.to(x.dtype)
    if return_final_state:
        return out, _final_state(x_ext, seq_ext, width).to(x.dtype)
    return out


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    seq_idx: Tensor | None = None,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    activation: str | None = "silu",
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Causal depthwise conv1d: causal-conv1d's CUDA kernel or ``causal_conv1d_ref`` (same arguments).

    x should be channel-last in memory (``[b, l, d].transpose(1, 2)``, as Mamba-2 produces it): the
    kernel needs that layout for ``seq_idx`` and states.
    """
    kernel = resolve("causal_conv1d", backend, "causal_conv1d", x)
    # NOTE: with one token the [b, d, 1] gradient is both channel-first and channel-last to causal-conv1d's
    # backward, which then rejects its strides (seen on an H100, causal-conv1d 1.7.0); one token costs nothing.
    if kernel is None or x.shape[-1] == 1:
        return causal_conv1d_ref(x, weight, bias, seq_idx, initial_state, return_final_state, activation)
    _check(x, weight, seq_idx, initial_state, activation)
    pieces = token_pieces(x.shape[-1], x.shape[0] * x.shape[1], extra_tokens=weight.shape[1] - 1)
    if len(pieces) == 1:
        return _conv_kernel(kernel, x, weight, bias, seq_idx, initial_state, return_final_state, activation)
    outs, state = [], initial_state
    for piece in pieces:
        seq = None if seq_idx is None else seq_idx[:, piece]
        if piece.start and seq is not None:  # a sample starting right at the cut keeps no history
            state = state * (seq_idx[:, piece.start] == seq_idx[:, piece.start - 1]).to(state.dtype)[:, None, None]
        out, state = _conv_kernel(kernel, x[..., piece], weight, bias, seq, state, True, activation)
        outs.append(out)
    out = torch.cat(outs, dim=-1)
    return (out, state) if return_final_state else out


def _conv_kernel(kernel, x: Tensor, weight: Tensor, bias: Tensor | None, seq_idx: Tensor | None,
                 initial_state: Tensor | None, return_final_state: bool, activation: str | None):
    """One causal-conv1d kernel call (inputs under 2^31 elements)."""
    width = weight.shape[1]
    # NOTE: seq_idx and initial states are only supported in channel-last layout; a strided view (xBC is a
    # slice of in_proj's output) is made dense when its span would overflow the kernel's 32-bit offsets.
    if x.stride(1) != 1 or too_wide(x):
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
    seq = None if seq_idx is None else seq_idx.to(torch.int32).contiguous()
    if seq is not None and initial_state is not None:
        # The kernel takes seq_idx or initial_states, not both: prepend the history as real inputs.
        x_ext, seq_ext = _extend(x, seq, initial_state, width)
        x_ext = x_ext.transpose(1, 2).contiguous().transpose(1, 2)
        out = kernel.causal_conv1d_fn(x_ext, weight, bias, seq_idx=seq_ext.contiguous(), activation=activation)
        out = out[..., width - 1:]
    else:
        init = None
        if initial_state is not None:
            init = initial_state.to(x.dtype).transpose(1, 2).contiguous().transpose(1, 2)
        out = kernel.causal_conv1d_fn(x, weight, bias, seq_idx=seq, initial_states=init, activation=activation)
    if return_final_state:
        # The last w - 1 inputs: cheap in PyTorch, and the kernel cannot return them together with seq_idx.
        tail = x[..., max(0, x.shape[-1] - (width - 1)):]
        tail_seq = None if seq is None else seq[:, max(0, seq.shape[1] - (width - 1)):]
        tail_ext, seq_ext = _extend(tail, tail_seq, initial_state, width)
        return out, _final_state(tail_ext, seq_ext, width)
    return out
