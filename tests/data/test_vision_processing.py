from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Qwen2VLImageProcessorPil

from vamba.data.vision import (
    PATCH_DIM,
    VisionConfig,
    num_video_tokens,
    patchify,
    process_frames,
    processed_size,
    vamba_resize_size,
)


@pytest.mark.parametrize("hw, edges, expected", [
    ((360, 640), (256, 480), (270, 480)),  # longer side to 480, other int(480 / aspect)
    ((360, 640), (256, 360), (256, 360)),  # 640x360 with longest 360 -> 360x202 -> raised to 256
    ((640, 360), (256, 480), (480, 270)),  # portrait: height is the long side
    ((100, 120), (256, 480), (256, 256)),  # small frames are raised to the shortest edge (aspect changes)
    ((300, 400), (None, None), (300, 400)),
])
def test_vamba_edge_rule(hw, edges, expected) -> None:
    assert vamba_resize_size(*hw, *edges) == expected


def test_processed_size_matches_documented_example() -> None:
    # the released pre-resize: 640x360 source, longest 480: loader 480x270, processor 476x280 (28-multiples, round)
    assert processed_size(360, 640, VisionConfig(shortest_edge=256, longest_edge=480)) == (280, 476)


@pytest.mark.parametrize("h, w", [(90, 130), (64, 64), (37, 201)])
def test_image_matches_transformers_image_processor(h: int, w: int) -> None:
    image = (np.random.default_rng(h).random((h, w, 3)) * 255).astype(np.uint8)
    ref = Qwen2VLImageProcessorPil()(images=Image.fromarray(image), return_tensors="pt")
    pixel_values, grid = process_frames(image[None], VisionConfig())
    torch.testing.assert_close(grid, ref["image_grid_thw"])
    torch.testing.assert_close(pixel_values, ref["pixel_values"], atol=1e-6, rtol=0)


def test_video_layout_pairs_consecutive_frames() -> None:
    # Distinct constant frames: each patch row must hold frame 2k in its first temporal half, 2k+1 in the second.
    T, H, W = 6, 56, 84
    frames = torch.arange(T, dtype=torch.float32).view(T, 1, 1, 1).expand(T, 3, H, W).clone()
    frames[:, 1] += 100  # channel marker
    pv, grid = patchify(frames)
    assert grid.tolist() == [[3, 4, 6]] and pv.shape == (3 * 4 * 6, PATCH_DIM)
    rows = pv.view(3, 4 * 6, 3, 2, 14, 14)  # (t, patches, C, temporal, ph, pw)
    for t in range(3):
        assert torch.all(rows[t, :, 0, 0] == 2 * t) and torch.all(rows[t, :, 0, 1] == 2 * t + 1)
        assert torch.all(rows[t, :, 1, 0] == 2 * t + 100)


def test_video_layout_merge_blocks_are_contiguous() -> None:
    # A frame whose value is its 14-pixel patch column: consecutive rows come in 2x2 merge blocks.
    H, W = 56, 56
    cols = torch.arange(W).div(14, rounding_mode="floor").float()
    rows_ = torch.arange(H).div(14, rounding_mode="floor").float()
    frame = (rows_[:, None] * 10 + cols[None, :]).expand(2, 3, H, W)
    pv, _ = patchify(frame.clone())
    first_values = pv[:, 0].tolist()  # (channel 0, temporal 0, pixel 0) of each patch
    assert first_values[:8] == [0, 1, 10, 11, 2, 3, 12, 13]


def test_odd_frames_dropped_or_repeated() -> None:
    frames = (np.random.default_rng(0).random((5, 56, 56, 3)) * 255).astype(np.uint8)
    dropped, g1 = process_frames(frames, VisionConfig(odd_frames="drop"))
    repeated, g2 = process_frames(frames, VisionConfig(odd_frames="repeat"))
    assert g1.tolist() == [[2, 4, 4]] and g2.tolist() == [[3, 4, 4]]
    torch.testing.assert_close(dropped, process_frames(frames[:4], VisionConfig())[0])
    torch.testing.assert_close(repeated[32:], process_frames(frames[[4, 4]], VisionConfig())[0])


@pytest.mark.parametrize("frames, odd", [(1, "drop"), (7, "drop"), (7, "repeat"), (8, "drop")])
def test_token_count_matches_processed_output(frames: int, odd: str) -> None:
    cfg = VisionConfig(shortest_edge=64, longest_edge=120, odd_frames=odd)
    video = np.zeros((frames, 90, 160, 3), dtype=np.uint8)
    _, grid = process_frames(video, cfg)
    assert num_video_tokens(frames, 90, 160, cfg) == int(grid.prod()) // 4


def test_bad_input_shapes() -> None:
    with pytest.raises(ValueError, match="expected uint8 frames"):
        process_frames(np.zeros((0, 56, 56, 3), np.uint8), VisionConfig())
    with pytest.raises(ValueError, match="odd_frames"):
        VisionConfig(odd_frames="pad")


def test_uint8_patches_normalise_to_the_float32_pixel_values():
    """process_frames(normalize=False) + normalize_patches == process_frames, bit for bit (data.pixel_dtype=uint8)."""
    import numpy as np

    from vamba.data.vision import VisionConfig, normalize_patches, process_frames

    frames = np.random.default_rng(0).integers(0, 256, (6, 90, 150, 3), dtype=np.uint8)
    want, grid = process_frames(frames, VisionConfig())
    raw, raw_grid = process_frames(frames, VisionConfig(), normalize=False)
    assert raw.dtype == torch.uint8 and raw.shape == want.shape and torch.equal(raw_grid, grid)
    assert torch.equal(normalize_patches(raw), want)
    assert normalize_patches(want) is want  # already normalised: untouched
    assert normalize_patches(raw, torch.bfloat16).dtype == torch.bfloat16


def test_pixel_limits_that_cannot_hold_are_refused() -> None:
    """``max_pixels=0`` divided by zero in smart_resize; ``min_pixels`` above ``max_pixels`` ignored the cap."""
    for bad in (dict(max_pixels=0), dict(min_pixels=60000, max_pixels=4000), dict(shortest_edge=0)):
        with pytest.raises(ValueError, match="must be|need 1 <= min_pixels"):
            VisionConfig(**bad)
