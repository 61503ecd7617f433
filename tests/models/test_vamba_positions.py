"""Text positions/segments and the video-stream layout (golden values)."""
from __future__ import annotations

import pytest
import torch

from vamba.models.positions import text_positions, text_segments, video_layout


def test_text_positions_for_left_and_right_padding():
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1]])
    assert text_positions(mask).tolist() == [[0, 1, 2, 2], [0, 0, 0, 1]]
    assert text_segments(mask, None).tolist() == [[0, 0, 0, -1], [-1, -1, 0, 0]]
    packed = torch.tensor([[0, 0, 1, 1]], dtype=torch.int32)
    assert text_segments(torch.tensor([[1, 1, 1, 0]]), packed).tolist() == [[0, 0, 1, -1]]


def test_video_layout_golden():
    # row 0: an image (1, 2, 4) -> 2 tokens then a video (2, 2, 2) -> 2 tokens; row 1: (1, 2, 2) -> 1 token.
    grid = torch.tensor([[1, 2, 4], [2, 2, 2], [1, 2, 2]])
    layout = video_layout(grid, torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), batch_size=2,
                          spatial_merge_size=2, packed=True)
    assert layout.length == 4
    assert layout.index.tolist() == [0, 1, 2, 3, 4]
    assert layout.segments.tolist() == [[0, 0, 1, 1], [0, -1, -1, -1]]
    assert layout.seq_idx.tolist() == [[0, 0, 1, 1], [0, 2, 2, 2]]
    assert layout.seq_idx.dtype == torch.int32
    t, h, w = layout.positions.tolist()
    assert (t[0], h[0], w[0]) == ([0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0])
    tokens = torch.arange(5.0)[:, None]
    assert layout.scatter(tokens)[..., 0].tolist() == [[0, 1, 2, 3], [4, 0, 0, 0]]
    assert video_layout(grid, torch.tensor([0, 0, 1]), None, 2, 2, packed=False).seq_idx is None


def test_video_positions_restart_per_item_in_thw_order():
    layout = video_layout(torch.tensor([[2, 4, 6]]), torch.tensor([0]), None, 1, 2, packed=False)
    t, h, w = layout.positions[:, 0]
    assert t.tolist() == [0] * 6 + [1] * 6
    assert h.tolist() == [0, 0, 0, 1, 1, 1] * 2
    assert w.tolist() == [0, 1, 2] * 4


def test_layout_errors():
    grid = torch.tensor([[1, 2, 2], [1, 2, 2]])
    with pytest.raises(ValueError, match="sample order"):
        video_layout(grid, torch.tensor([0, 0]), torch.tensor([1, 0]), 1, 2, packed=True)
    with pytest.raises(ValueError, match="disagree"):
        video_layout(grid, torch.tensor([0]), None, 1, 2, packed=False)
