"""``VideoShard``: this rank's slice of one forward's video stream, bound to its context-parallel group.

The model (vamba.models) builds its local video stream [B, L, D] from the visual pieces this rank holds (each
row's pieces in time order, padding after) and asks its ``ContextParallel`` (vamba.parallel.groups) for a
``VideoShard`` of the layout's segments; every decoder layer then calls the shard's ``mamba_block`` and
``cross_attention`` instead of the single-process ones (docs/context_parallel.md). The layout metadata all layers
share (counts, first/last sample ids, conv-tail positions) is exchanged once per forward.
"""
from __future__ import annotations

import torch
from torch import Tensor

from vamba.models.mamba2 import Mamba2Block
from vamba.parallel.attention import cross_attention
from vamba.parallel.comm import all_gather_plain, all_gather_stack
from vamba.parallel.mamba import history_selector, incoming_coefficients, mixer_forward


class VideoShard:
    """segments: [B, L] sample id of each local video slot (-1 = padding), as the model's ``VideoLayout`` gives it.

    Attributes used by the Mamba-2 math (vamba.parallel.mamba): ``seq`` [B, L] int32 sample ids (padding continues
    the row's last id), ``valid`` [B, L] bool, ``first_run``
    [B, L] bool (tokens of the slice's first sample); gathered over the group: ``count``/``first``/``last`` [R, B].
    """

    def __init__(self, segments: Tensor, group, rank: int, size: int) -> None:
        self.group, self.rank, self.size = group, rank, size
        self.valid = segments >= 0
        seq = segments.cummax(dim=1).values.clamp(min=0) if segments.shape[1] else segments.clamp(min=0)
        self.seq = seq.to(torch.int32).contiguous()
        count = self.valid.sum(1)
        first = seq[:, 0] if seq.shape[1] else torch.zeros_like(count)
        last = seq[:, -1] if seq.shape[1] else torch.zeros_like(count)
        self.first_run = self.valid & (seq == first[:, None])
        meta = all_gather_plain(torch.stack([count, first.long(), last.long()]), group)  # [R, 3, B]
        self.count, self.first, self.last = meta[:, 0], meta[:, 1], meta[:, 2]
        self._tails: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    # -- Mamba-2 -------------------------------------------------------------------------------------------
    def _tail_layout(self, width: int) -> tuple[Tensor, Tensor, Tensor]:
        """(positions [B, W-1] of the last W-1 real tokens, their validity [B, W-1], the selector of the inputs
        before this slice [B, R*(W-1), W-1]) for a conv of ``width``; computed once per forward."""
        if width not in self._tails:
            w1 = width - 1
            count = self.count[self.rank]
            pos = count[:, None] - w1 + torch.arange(w1, device=count.device)[None]  # [B, W-1]
            ok = pos >= 0
            pos = pos.clamp(min=0, max=max(self.seq.shape[1] - 1, 0))
            seq = self.seq.long().gather(1, pos) if self.seq.shape[1] else torch.zeros_like(pos)
            gathered = all_gather_plain(torch.stack([ok.long(), seq]), self.group)  # [R, 2, B, W-1]
            selector = history_selector(gathered[:, 0].bool(), gathered[:, 1], self.first[self.rank], self.rank,
                                        torch.float32)
            self._tails[width] = (pos, ok, selector)
        return self._tails[width]

    def conv_history(self, xbc: Tensor, width: int) -> Tensor:
        """xbc [B, L, C] conv inputs of this slice -> [B, C, W-1] the inputs before it (zero across a sample
        boundary or before the row's start): the causal conv's ``initial_state``."""
        pos, ok, selector = self._tail_layout(width)
        b, _, c = xbc.shape
        tails = xbc.gather(1, pos[..., None].expand(b, pos.shape[1], c)) * ok[..., None].to(xbc.dtype)
        every = all_gather_stack(tails, self.group)  # [R, B, W-1, C]
        flat = every.permute(1, 0, 2, 3).reshape(b, -1, c)
        return torch.einsum("bec,bes->bcs", flat, selector.to(xbc.dtype))

    def incoming_state(self, final: Tensor, decay: Tensor) -> Tensor:
        """final [B, H, P, N] zero-start final state, decay [B, H] whole-slice decay -> the state entering this
        slice [B, H, P, N] (one all-gather of both)."""
        b, h, p, n = final.shape
        every = all_gather_stack(torch.cat([final.reshape(b, -1), decay.to(final.dtype)], dim=1), self.group)
        states = every[..., : h * p * n].reshape(self.size, b, h, p, n)
        coef = incoming_coefficients(every[..., h * p * n:], self.first, self.last, self.count, self.rank)
        return torch.einsum("rbh,rbhpn->bhpn", coef, states)

    def mamba_block(self, block: Mamba2Block, hidden: Tensor) -> Tensor:
        """``block(hidden)`` (``hidden + mixer(norm(hidden))``) on this slice, exact across the group."""
        return hidden + mixer_forward(block.mixer, block.norm(hidden), self)

    # -- cross-attention -----------------------------------------------------------------------------------
    def cross_attention(self, q: Tensor, k: Tensor, v: Tensor, q_seg: Tensor | None, k_seg: Tensor | None,
                        scale: float, backend: str) -> Tensor:
        """Same I/O as ``vamba.models.attention.attention`` (non-causal), over the whole group's keys. The eager
        backends take the reference path (explicit scores), every other backend PyTorch's fused kernels."""
        fused = backend not in ("eager", "eager_fused")
        return cross_attention(q, k, v, q_seg, k_seg, scale, self.group, fused=fused)
