"""Where every token sits: text positions and segments, and the layout of the video stream.

VAMBA's text carries no ``<|video_pad|>`` tokens, so text M-RoPE positions are plain ``0..n-1`` per
sample on all three axes (as the released model; we own this instead of transformers' ``get_rope_index``,
whose 5.x version moves text positions after long videos). Video tokens live in their own stream:
``video_layout`` turns the batch contract's ``grid_thw`` / ``visual_row`` / ``visual_seq_idx``
(docs/batch.md) into the padded ``[B, M]`` arrangement of merged tokens, their sample ids (cross-attention
segments and the Mamba-2 ``seq_idx``) and their 3-D ``(t, h, w)`` positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def text_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, N] long positions 0..n-1 over the real tokens of each row (padding gets 0), left or right padded."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def text_segments(attention_mask: torch.Tensor, text_seq_idx: torch.Tensor | None) -> torch.Tensor:
    """[B, N] long sample id of each text token, -1 on padding (``text_seq_idx`` for packed rows, else 0)."""
    if text_seq_idx is not None:
        seg = text_seq_idx.long()
        if attention_mask is not None:
            seg = seg.masked_fill(attention_mask == 0, -1)
        return seg
    return torch.where(attention_mask.bool(), 0, -1)


@dataclass
class VideoLayout:
    """Arrangement of the merged video tokens of a batch (``L`` = total merged tokens of all items).

    index:     [L] long, flat position ``row * M + slot`` of each merged token in the padded stream
    segments:  [B, M] long, sample id of each slot (-1 = padding / dummy): cross-attention key segments
    seq_idx:   [B, M] int32 Mamba-2 state-reset ids (packed rows) or None (one sample per row)
    positions: [3, B, M] long ``(t, h, w)`` M-RoPE positions of each slot, restarting at 0 for each item
    """

    batch_size: int
    length: int
    index: torch.Tensor
    segments: torch.Tensor
    seq_idx: torch.Tensor | None
    positions: torch.Tensor

    def scatter(self, tokens: torch.Tensor) -> torch.Tensor:
        """[L, D] merged tokens (batch item order) -> [B, M, D] video stream, zeros on padding."""
        out = tokens.new_zeros(self.batch_size * self.length, tokens.shape[-1])
        out = out.index_copy(0, self.index, tokens)
        return out.view(self.batch_size, self.length, -1)


def video_layout(grid_thw: torch.Tensor, visual_row: torch.Tensor, visual_seq_idx: torch.Tensor | None,
                 batch_size: int, spatial_merge_size: int, packed: bool,
                 visual_t_offset: torch.Tensor | None = None) -> VideoLayout:
    """Lay out the merged tokens of every visual item in its row, in item order (docs/batch.md).

    grid_thw [V, 3], visual_row [V], visual_seq_idx [V] (None = all 0). Items of one row must come in
    sample order (non-decreasing ``visual_seq_idx``): the Mamba-2 scan runs left to right through the row.
    visual_t_offset [V] (None = all 0): temporal position of each item's first temporal patch, for items that
    are later pieces of a longer video (context parallelism, docs/context_parallel.md).
    """
    device = grid_thw.device
    grids = grid_thw.tolist()
    rows = visual_row.tolist()
    seqs = visual_seq_idx.tolist() if visual_seq_idx is not None else [0] * len(rows)
    offsets = visual_t_offset.tolist() if visual_t_offset is not None else [0] * len(rows)
    if not (len(grids) == len(rows) == len(seqs) == len(offsets)):
        raise ValueError(f"grid_thw, visual_row, visual_seq_idx, visual_t_offset disagree: {len(grids)}, {len(rows)}, "
                         f"{len(seqs)}, {len(offsets)} items")
    counts = [0] * batch_size
    last_seq = [-1] * batch_size
    spans = []  # (row, start, n_tokens, seq, t, h, w, t_offset) per item
    for (t, h, w), row, seq, t0 in zip(grids, rows, seqs, offsets):
        if not 0 <= row < batch_size:
            raise ValueError(f"visual_row {row} is outside the batch of {batch_size} rows")
        if h % spatial_merge_size or w % spatial_merge_size:
            raise ValueError(f"grid (t={t}, h={h}, w={w}) is not divisible by spatial_merge_size {spatial_merge_size}")
        if seq < last_seq[row]:
            raise ValueError(f"row {row}: visual items must come in sample order, got visual_seq_idx {seq} "
                             f"after {last_seq[row]}")
        last_seq[row] = seq
        gh, gw = h // spatial_merge_size, w // spatial_merge_size
        n = t * gh * gw
        spans.append((row, counts[row], n, seq, t, gh, gw, t0))
        counts[row] += n
    length = max(counts) if counts else 0
    index = torch.empty(sum(s[2] for s in spans), dtype=torch.long)
    segments = torch.full((batch_size, length), -1, dtype=torch.long)
    positions = torch.zeros(3, batch_size, length, dtype=torch.long)
    offset = 0
    for row, start, n, seq, t, gh, gw, t0 in spans:
        index[offset:offset + n] = torch.arange(row * length + start, row * length + start + n)
        segments[row, start:start + n] = seq
        tt = torch.arange(t0, t0 + t).repeat_interleave(gh * gw)
        hh = torch.arange(gh).repeat_interleave(gw).repeat(t)
        ww = torch.arange(gw).repeat(t * gh)
        positions[:, row, start:start + n] = torch.stack([tt, hh, ww])
        offset += n
    seq_idx = None
    if packed:
        # Padding after the last sample gets an id of its own so no state flows into or out of it.
        seq_idx = torch.where(segments >= 0, segments, segments.max() + 1 if segments.numel() else 0)
        seq_idx = seq_idx.to(torch.int32)
        seq_idx = seq_idx.to(device)
    return VideoLayout(batch_size, length, index.to(device), segments.to(device), seq_idx, positions.to(device))
