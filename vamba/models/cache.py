"""``VideoCache``: the per-layer cross-attention keys/values of a batch of videos.

Text never flows into the video stream, so once the vision tower, the Mamba-2 blocks and the
cross-attention K/V projections have run over a video, every later text token (every decoding step,
every further question about the same video) only needs these tensors: decoding touches the text
stream alone. Build one with ``VambaForConditionalGeneration.encode_video`` (or take
``outputs.video_cache`` from a forward with ``use_cache=True``) and pass it as ``video_cache=``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class VideoCache:
    """keys/values: one [B, Hkv, M, head_dim] pair per decoder layer (M-RoPE already applied to keys when
    ``cross_attn_use_position_embeddings``); segments: [B, M] sample id of each video slot, -1 = padding."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    segments: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.segments.shape[0]

    def __len__(self) -> int:
        return len(self.keys)

    def select(self, rows: torch.Tensor | list[int]) -> VideoCache:
        """The cache of some rows (e.g. ``[0, 0, 0]`` to ask three questions about row 0's video in one batch)."""
        rows = torch.as_tensor(rows, device=self.segments.device)
        return VideoCache([k[rows] for k in self.keys], [v[rows] for v in self.values], self.segments[rows])

    def contiguous(self) -> VideoCache:
        """This cache with every key/value tensor contiguous (itself when they are): ``forward`` collects them in the
        projections' [B, M, Hkv, d] memory order, which decoding's split attention would otherwise copy per step."""
        if all(t.is_contiguous() for t in self.keys + self.values):
            return self
        return VideoCache([k.contiguous() for k in self.keys], [v.contiguous() for v in self.values], self.segments)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> VideoCache:
        return VideoCache([k.to(device=device, dtype=dtype) for k in self.keys],
                          [v.to(device=device, dtype=dtype) for v in self.values], self.segments.to(device=device))
