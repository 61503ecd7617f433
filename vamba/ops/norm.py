"""RMSNorm with an optional SiLU gate (Mamba-2's output norm; without a gate, the block's pre-norm).

    norm_before_gate=False (Mamba-2):  y = rmsnorm(x * silu(z)) * weight
    norm_before_gate=True:             y = rmsnorm(x) * weight * silu(z)

with the mean square taken over groups of ``group_size`` channels (Mamba-2: d_ssm / ngroups).
``gated_rms_norm`` runs mamba-ssm's Triton kernel on CUDA when available, else ``gated_rms_norm_ref``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vamba.ops._backend import compact, resolve, token_pieces


def _check(x: Tensor, weight: Tensor, z: Tensor | None, group_size: int | None) -> None:
    d = x.shape[-1]
    if weight.shape != (d,):
        raise ValueError(f"gated_rms_norm: weight shape {tuple(weight.shape)} != ({d},)")
    if z is not None and z.shape != x.shape:
        raise ValueError(f"gated_rms_norm: gate shape {tuple(z.shape)} != x shape {tuple(x.shape)}")
    if group_size is not None and d % group_size:
        raise ValueError(f"gated_rms_norm: {d} channels are not divisible into groups of {group_size}")


def gated_rms_norm_ref(
    x: Tensor,
    weight: Tensor,
    z: Tensor | None = None,
    eps: float = 1e-5,
    group_size: int | None = None,
    norm_before_gate: bool = False,
) -> Tensor:
    """Gated RMSNorm in PyTorch, computed in float32 (float64 for float64 inputs).

    Args:
        x: [..., d]; weight: [d]; z: [..., d] gate or None (plain RMSNorm).
        group_size: channels per normalisation group (None: all d).

    Returns:
        [..., d] in x's dtype.
    """
    _check(x, weight, z, group_size)
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = x.to(work)
    if z is not None and not norm_before_gate:
        y = y * F.silu(z.to(work))
    d = y.shape[-1]
    grouped = y.unflatten(-1, (d // (group_size or d), group_size or d))
    y = (grouped * torch.rsqrt(grouped.square().mean(-1, keepdim=True) + eps)).flatten(-2)
    y = y * weight.to(work)
    if z is not None and norm_before_gate:
        y = y * F.silu(z.to(work))
    return y.to(x.dtype)


def gated_rms_norm(
    x: Tensor,
    weight: Tensor,
    z: Tensor | None = None,
    eps: float = 1e-5,
    group_size: int | None = None,
    norm_before_gate: bool = False,
    backend: str = "auto",
) -> Tensor:
    """Gated RMSNorm: mamba-ssm's Triton ``rmsnorm_fn`` or ``gated_rms_norm_ref`` (same arguments)."""
    kernel = resolve("gated_rms_norm", backend, "mamba_ssm.ops.triton.layernorm_gated", x)
    if kernel is None:
        return gated_rms_norm_ref(x, weight, z, eps, group_size, norm_before_gate)
    _check(x, weight, z, group_size)
    rows_x, rows_z = x.reshape(-1, x.shape[-1]), None if z is None else z.reshape(-1, z.shape[-1])
    outs = [kernel.rmsnorm_fn(compact(rows_x[piece]), weight, None,
                              z=None if rows_z is None else compact(rows_z[piece]), eps=eps, group_size=group_size,
                              norm_before_gate=norm_before_gate)
            for piece in token_pieces(rows_x.shape[0], rows_x.shape[1])]
    return (outs[0] if len(outs) == 1 else torch.cat(outs)).view(x.shape)
