"""Mamba-1-style selective-scan block (S6, Gu & Dao 2023) for the video stream: the mixer ablation's third arm.

The paper compares Mamba-2 video blocks with Mamba(-1) ones (LVBench 35.3 vs 34.2). This is that block in pure
PyTorch, a reference implementation only: the scan runs token by token with a float32 state, which is right
for the CPU miniature (tens of video tokens per sample) and far too slow at scale; no fused kernel is
provided (mamba-ssm's Mamba-1 CUDA extension is not built on our GPU image, docs/kernels.md). Per token t,
channel c (d_inner channels), state n (d_state):

    x, z = in_proj(RMSNorm(hidden))                        [B, L, d_inner] each
    x = silu(causal depthwise conv1d(x))                    (d_conv taps)
    dt_low, B, C = x_proj(x)                                [dt_rank], [d_state], [d_state] (shared by channels)
    dt = softplus(dt_proj(dt_low))                          [d_inner] (dt_proj's bias holds the dt init)
    h[t, c, n] = exp(dt[t, c] A[c, n]) h[t-1, c, n] + dt[t, c] B[t, n] x[t, c],    A = -exp(A_log)
    y[t, c] = sum_n C[t, n] h[t, c, n] + D[c] x[t, c]
    out = hidden + out_proj(y * silu(z))

Packed rows (``seq_idx``): the conv and the state restart at each new sample. Streaming (``state``,
``return_state``): the last d_conv - 1 conv inputs and h carry over to the next piece of the video.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vamba.models.mamba2 import RMSNorm
from vamba.models.zero import gathered
from vamba.ops import causal_conv1d


@dataclass
class SelectiveScanConfig:
    d_model: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    norm_eps: float = 1e-5

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank(self) -> int:
        return math.ceil(self.d_model / 16)


@dataclass
class SelectiveScanState:
    """Streaming state of one block: conv_state [B, d_inner, d_conv - 1] (the last conv inputs, in the
    activations' dtype, as ``vamba.ops.causal_conv1d`` keeps them), ssm_state [B, d_inner, d_state] (h, float32)."""

    conv_state: Tensor
    ssm_state: Tensor


def selective_scan_ref(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                       seq_idx: Tensor | None = None, initial_state: Tensor | None = None,
                       return_final_state: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """The S6 recurrence, token by token, float32 state. x, dt [B, L, d_inner]; A [d_inner, N]; B, C [B, L, N];
    D [d_inner]; seq_idx [B, L] or None (the state restarts where it changes); initial_state h [B, d_inner, N].
    Returns y [B, L, d_inner] (and the final h)."""
    batch, length, channels = x.shape
    work = torch.promote_types(x.dtype, torch.float32)  # float32 state (float64 when asked, for tests)
    xf, dtf, Af, Bf, Cf = (v.to(work) for v in (x, dt, A, B, C))
    h = x.new_zeros(batch, channels, A.shape[1], dtype=work) if initial_state is None else initial_state.to(work)
    ys = []
    for t in range(length):
        decay = torch.exp(dtf[:, t, :, None] * Af)  # [B, d_inner, N]
        if seq_idx is not None and t > 0:
            decay = decay * (seq_idx[:, t] == seq_idx[:, t - 1]).to(work)[:, None, None]
        h = decay * h + (dtf[:, t, :, None] * Bf[:, t, None, :]) * xf[:, t, :, None]
        ys.append((h * Cf[:, t, None, :]).sum(-1))
    y = (torch.stack(ys, dim=1) + xf * D.to(work)).to(x.dtype)
    return (y, h) if return_final_state else y


class SelectiveScanBlock(nn.Module):
    """Pre-norm residual S6 block (Mamba-1 layout): ``hidden + mixer(norm(hidden))``. [B, L, d_model] -> same."""

    def __init__(self, config: SelectiveScanConfig) -> None:
        super().__init__()
        self.config = c = config
        self.norm = RMSNorm(c.d_model, eps=c.norm_eps, backend="reference")
        self.in_proj = nn.Linear(c.d_model, 2 * c.d_inner, bias=False)
        self.conv1d = nn.Conv1d(c.d_inner, c.d_inner, c.d_conv, groups=c.d_inner, padding=c.d_conv - 1)
        self.x_proj = nn.Linear(c.d_inner, c.dt_rank + 2 * c.d_state, bias=False)
        self.dt_proj = nn.Linear(c.dt_rank, c.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(c.d_inner, c.d_state))
        self.D = nn.Parameter(torch.empty(c.d_inner))
        self.out_proj = nn.Linear(c.d_inner, c.d_model, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Mamba-1's initialisation: A = -(1..N) per channel (S4D-real), D = 1, dt log-uniform in
        [dt_min, dt_max] stored through the inverse softplus in dt_proj's bias, dt_proj weight ~ U(+-rank^-0.5)."""
        c = self.config
        with torch.no_grad(), gathered(self.parameters()):  # ZeRO-3: already partitioned here
            self.norm.reset_parameters()
            for m in (self.in_proj, self.conv1d, self.x_proj, self.out_proj):
                m.reset_parameters()
            nn.init.uniform_(self.dt_proj.weight, -c.dt_rank ** -0.5, c.dt_rank ** -0.5)
            dt = torch.exp(torch.rand(c.d_inner) * (math.log(c.dt_max) - math.log(c.dt_min)) + math.log(c.dt_min))
            dt = dt.clamp(min=c.dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            self.A_log.copy_(torch.arange(1, c.d_state + 1, dtype=torch.float32).log().expand(c.d_inner, -1))
            self.D.fill_(1.0)

    def forward(self, hidden: Tensor, seq_idx: Tensor | None = None, state: SelectiveScanState | None = None,
                return_state: bool = False) -> Tensor | tuple[Tensor, SelectiveScanState]:
        """hidden [B, L, d_model]; seq_idx int [B, L] (packed samples) or None. ``state`` continues a video from
        its previous piece (not with packed rows); ``return_state`` also returns the state after this piece."""
        if state is not None and seq_idx is not None:
            raise NotImplementedError("SelectiveScanBlock: streaming state with packed rows (seq_idx) is not supported")
        c = self.config
        x, z = self.in_proj(self.norm(hidden)).chunk(2, dim=-1)
        conv = causal_conv1d(x.transpose(1, 2), self.conv1d.weight[:, 0], self.conv1d.bias, seq_idx=seq_idx,
                             initial_state=None if state is None else state.conv_state,
                             return_final_state=return_state, activation="silu", backend="reference")
        x, conv_state = conv if return_state else (conv, None)
        x = x.transpose(1, 2)
        dt_low, B, C = self.x_proj(x).split([c.dt_rank, c.d_state, c.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt_low))
        y, h = selective_scan_ref(x, dt, -torch.exp(self.A_log.float()), B, C, self.D, seq_idx,
                                  initial_state=None if state is None else state.ssm_state, return_final_state=True)
        out = hidden + self.out_proj(y * F.silu(z))
        if not return_state:
            return out
        return out, SelectiveScanState(conv_state=conv_state, ssm_state=h)
