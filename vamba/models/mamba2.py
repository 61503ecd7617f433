"""Mamba-2 block for the video stream: ``hidden + Mixer(RMSNorm(hidden))`` (VAMBA's ``vision_mixer``).

Parameter names, shapes, defaults and initialisation follow mamba-ssm's ``Mamba2`` as used by the
released VAMBA checkpoint, so ``vision_mixer.norm.weight`` and
``vision_mixer.mixer.{in_proj.weight, conv1d.weight, conv1d.bias, dt_bias, A_log, D, norm.weight,
out_proj.weight}`` load unchanged. The mixer:

    [z, xBC, dt] = in_proj(u)                      z, x: d_inner; B, C: ngroups * d_state; dt: nheads
    xBC = silu(causal_conv1d(xBC))                 depthwise, width d_conv
    y = SSD(x, dt + dt_bias, A = -exp(A_log), B, C) + D * x
    out = out_proj(rmsnorm(y * silu(z)) * norm.weight)

Streaming: ``return_state=True`` returns a ``Mamba2State`` (conv inputs + SSM state) that a later call
takes as ``state=`` to continue exactly where this one stopped, so a long video can pass in pieces.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vamba.models.zero import gathered
from vamba.ops import OP_BACKENDS, causal_conv1d, gated_rms_norm, ssd_scan, token_pieces


@dataclass
class Mamba2Config:
    """Mamba-2 block sizes; mirrors the released ``vision_mamba_mixer_config`` fields where they exist (a checkpoint's
    config is read and checked once, by ``VambaConfig``; ``VambaConfig.mamba_config()`` builds this).

    d_model is the released ``hidden_dim``. ``num_layers`` only scales out_proj's initialisation by
    1/sqrt(num_layers) (the released ``rescale_prenorm_residual``; the decoder passes its depth).
    """

    d_model: int
    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    chunk_size: int = 256
    bias: bool = False
    conv_bias: bool = True
    norm_eps: float = 1e-5
    A_init_range: tuple[float, float] = (1.0, 16.0)
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    backend: str = "auto"  # auto | fast | reference
    dt_limit: tuple[float, float] = (0.0, float("inf"))
    num_layers: int = 1
    rescale_prenorm_residual: bool = True

    def __post_init__(self) -> None:
        if self.d_inner % self.headdim:
            raise ValueError(f"Mamba2Config: d_inner {self.d_inner} (expand * d_model) is not a multiple of headdim {self.headdim}")
        if self.nheads % self.ngroups:
            raise ValueError(f"Mamba2Config: {self.nheads} heads are not divisible into {self.ngroups} groups")
        if self.backend not in OP_BACKENDS:
            raise ValueError(f"Mamba2Config: backend must be one of {OP_BACKENDS}, got {self.backend!r}")
        if not 0 < self.A_init_range[0] <= self.A_init_range[1]:
            raise ValueError(f"Mamba2Config: A_init_range must be 0 < low <= high, got {self.A_init_range}")
        self.A_init_range = tuple(self.A_init_range)
        self.dt_limit = tuple(self.dt_limit)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.ngroups * self.d_state


@dataclass
class Mamba2State:
    """Streaming state of one block for a batch (float32 SSM state; conv inputs in the activations' dtype).

    conv_state: [B, conv_dim, d_conv - 1] the last conv inputs.  ssm_state: [B, nheads, headdim, d_state].
    seq_idx: [B] sample index of the last token seen, when the stream is packed (None otherwise): a next
    piece continues the state only in rows whose first token has that same index, so a cut that falls
    exactly on a sample boundary still starts the new sample from zero.
    """

    conv_state: Tensor
    ssm_state: Tensor
    seq_idx: Tensor | None = None


class RMSNorm(nn.Module):
    """RMSNorm computed in float32, output in the input's dtype (the block's pre-norm; weight init 1)."""

    def __init__(self, dim: int, eps: float = 1e-5, group_size: int | None = None, backend: str = "auto") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.group_size = group_size
        self.backend = backend

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        """x, z: [..., dim]; with a gate z: rmsnorm(x * silu(z)) (Mamba-2's norm_before_gate=False)."""
        return gated_rms_norm(x, self.weight, z, self.eps, self.group_size, norm_before_gate=False, backend=self.backend)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, group_size={self.group_size}"


class Mamba2Mixer(nn.Module):
    """Mamba-2 mixer (mamba-ssm ``Mamba2`` layout, d_ssm = d_inner, no MLP part)."""

    def __init__(self, config: Mamba2Config) -> None:
        super().__init__()
        self.config = c = config
        self.in_proj = nn.Linear(c.d_model, 2 * c.d_inner + 2 * c.ngroups * c.d_state + c.nheads, bias=c.bias)
        self.conv1d = nn.Conv1d(c.conv_dim, c.conv_dim, c.d_conv, groups=c.conv_dim, padding=c.d_conv - 1, bias=c.conv_bias)
        self.dt_bias = nn.Parameter(torch.empty(c.nheads))
        self.A_log = nn.Parameter(torch.empty(c.nheads))
        self.D = nn.Parameter(torch.empty(c.nheads))
        self.norm = RMSNorm(c.d_inner, eps=c.norm_eps, group_size=c.d_inner // c.ngroups, backend=c.backend)
        self.out_proj = nn.Linear(c.d_inner, c.d_model, bias=c.bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The released initialisation: dt log-uniform in [dt_min, dt_max] (floored) stored through the
        inverse softplus; A ~ U(A_init_range) stored as log; D = 1; norm 1; PyTorch default linears/conv,
        out_proj then scaled by 1/sqrt(num_layers)."""
        c = self.config
        with torch.no_grad(), gathered(self.parameters()):  # ZeRO-3: children are already partitioned
            log_dt = torch.rand(c.nheads) * (math.log(c.dt_max) - math.log(c.dt_min)) + math.log(c.dt_min)
            dt = torch.exp(log_dt).clamp(min=c.dt_init_floor)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
            self.A_log.copy_(torch.empty(c.nheads).uniform_(*c.A_init_range).log())
            self.D.fill_(1.0)
            self.in_proj.reset_parameters()
            self.conv1d.reset_parameters()
            self.norm.reset_parameters()
            self.out_proj.reset_parameters()
            if c.rescale_prenorm_residual:
                self.out_proj.weight /= math.sqrt(c.num_layers)

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Mamba2State:
        """Zero state (same result as passing no state)."""
        c = self.config
        device = device or self.in_proj.weight.device
        return Mamba2State(
            conv_state=torch.zeros(batch, c.conv_dim, c.d_conv - 1, device=device, dtype=dtype or self.in_proj.weight.dtype),
            ssm_state=torch.zeros(batch, c.nheads, c.headdim, c.d_state, device=device, dtype=torch.float32),
        )

    def forward(self, x: Tensor, seq_idx: Tensor | None = None, state: Mamba2State | None = None,
                return_state: bool = False) -> Tensor | tuple[Tensor, Mamba2State]:
        """x: [B, L, d_model]; seq_idx: int [B, L] packed-sample index (nondecreasing per row) or None.

        ``state`` continues each row's first sample from a previous call; ``return_state`` also returns
        the state after x. Returns [B, L, d_model] (and the state).
        """
        c = self.config
        batch, length, _ = x.shape
        if seq_idx is not None and seq_idx.shape != (batch, length):
            raise ValueError(f"Mamba2Mixer: seq_idx shape {tuple(seq_idx.shape)} != (batch, length) {(batch, length)}")
        if length == 0:  # e.g. a batch without video: keep every parameter in the graph, pass the state on
            out = self.out_proj(self.in_proj(x)[..., : c.d_inner])
            return (out, state if state is not None else self.init_state(batch, x.device)) if return_state else out
        if state is not None and seq_idx is not None and state.seq_idx is not None:
            same = (seq_idx[:, 0] == state.seq_idx)[:, None, None]  # rows that continue their last sample
            state = Mamba2State(state.conv_state * same.to(state.conv_state.dtype),
                                state.ssm_state * same[..., None].to(state.ssm_state.dtype))
        z, xbc, dt = project(self.in_proj, x).split([c.d_inner, c.conv_dim, c.nheads], dim=-1)
        conv = causal_conv1d(
            xbc.transpose(1, 2), self.conv1d.weight[:, 0], self.conv1d.bias, seq_idx=seq_idx,
            initial_state=None if state is None else state.conv_state, return_final_state=return_state,
            activation="silu", backend=c.backend)
        xbc, conv_state = conv if return_state else (conv, None)
        xs, B, C = xbc.transpose(1, 2).split([c.d_inner, c.ngroups * c.d_state, c.ngroups * c.d_state], dim=-1)
        scan = ssd_scan(
            xs.unflatten(-1, (c.nheads, c.headdim)), dt, -torch.exp(self.A_log.float()),
            B.unflatten(-1, (c.ngroups, c.d_state)), C.unflatten(-1, (c.ngroups, c.d_state)), c.chunk_size,
            D=self.D, dt_bias=self.dt_bias, dt_softplus=True, dt_limit=c.dt_limit, seq_idx=seq_idx,
            initial_state=None if state is None else state.ssm_state, return_final_state=return_state,
            backend=c.backend)
        y, ssm_state = scan if return_state else (scan, None)
        out = project(self.out_proj, self.norm(y.flatten(-2), z))
        if return_state:
            last = None if seq_idx is None else seq_idx[:, -1].clone()
            return out, Mamba2State(conv_state=conv_state, ssm_state=ssm_state, seq_idx=last)
        return out


def project(linear: nn.Linear, x: Tensor) -> Tensor:
    """``linear(x)`` for x: [..., in_features], cut along the tokens so that no single matmul operand or
    output passes ``MAX_KERNEL_ELEMENTS``. NOTE: in_proj at 153k tokens x 16.6k outputs (VAMBA-7B, bf16)
    failed with CUBLAS_STATUS_EXECUTION_FAILED on an H100 (2026-11-23); the pieces are exact (a row's
    output depends on that row only) and autograd accumulates the weight gradient over them."""
    flat = x.reshape(-1, x.shape[-1])
    pieces = token_pieces(flat.shape[0], max(linear.in_features, linear.out_features))
    if len(pieces) == 1:
        return linear(x)
    return torch.cat([linear(flat[p]) for p in pieces]).view(*x.shape[:-1], linear.out_features)


class Mamba2Block(nn.Module):
    """Pre-norm residual block: ``hidden + mixer(norm(hidden))`` (no MLP; VAMBA's ``vision_mixer``)."""

    def __init__(self, config: Mamba2Config) -> None:
        super().__init__()
        self.config = config
        self.norm = RMSNorm(config.d_model, eps=config.norm_eps, backend=config.backend)
        self.mixer = Mamba2Mixer(config)

    def reset_parameters(self) -> None:
        with gathered(self.norm.parameters()):  # ZeRO-3: the norm is already partitioned here
            self.norm.reset_parameters()
        self.mixer.reset_parameters()

    def forward(self, hidden_states: Tensor, seq_idx: Tensor | None = None, state: Mamba2State | None = None,
                return_state: bool = False) -> Tensor | tuple[Tensor, Mamba2State]:
        """hidden_states: [B, L, d_model]; other arguments and returns as ``Mamba2Mixer.forward``."""
        out = self.mixer(self.norm(hidden_states), seq_idx=seq_idx, state=state, return_state=return_state)
        if return_state:
            return hidden_states + out[0], out[1]
        return hidden_states + out
