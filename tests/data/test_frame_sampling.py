from __future__ import annotations

import pytest
import torch

from vamba.data.sampling import (
    FrameSampling,
    fps_indices,
    frames_for_token_budget,
    random_indices,
    sample_frames,
    uniform_indices,
)


@pytest.mark.parametrize("total, num, expected", [
    # integer linspace(0, 10, 5) = [0, 2, 5, 7, 10] -> midpoints
    (10, 4, [1, 3, 6, 8]),
    # integer linspace(0, 100, 9) = [0, 12, 25, 37, 50, 62, 75, 87, 100]
    (100, 8, [6, 18, 31, 43, 56, 68, 81, 93]),
    (7, 3, [1, 3, 5]),  # boundaries [0, 2, 4, 7]
    (5, 5, [0, 1, 2, 3, 4]),  # not fewer than the video: every frame
    (3, 8, [0, 1, 2]),
])
def test_uniform_matches_released_vamba_indices(total: int, num: int, expected: list[int]) -> None:
    assert uniform_indices(total, num) == expected


def test_uniform_long_video_is_sorted_unique_and_in_range() -> None:
    idx = uniform_indices(5400, 1024)
    assert len(idx) == 1024 and idx == sorted(set(idx)) and 0 <= idx[0] and idx[-1] < 5400


def test_fps_sampling_and_cap() -> None:
    # 30 fps video of 300 frames at 2 fps -> one frame every 15
    assert fps_indices(300, 30.0, 2.0) == list(range(0, 300, 15))
    # capped: falls back to uniform over the whole video rather than truncating its end
    capped = fps_indices(300, 30.0, 2.0, max_frames=5)
    assert capped == uniform_indices(300, 5) and capped[-1] > 200


def test_random_is_segment_bounded_and_seeded() -> None:
    a = random_indices(100, 8, torch.Generator().manual_seed(1))
    b = random_indices(100, 8, torch.Generator().manual_seed(1))
    c = random_indices(100, 8, torch.Generator().manual_seed(2))
    bounds = [0, 12, 25, 37, 50, 62, 75, 87, 100]
    assert a == b and a != c
    assert all(bounds[k] <= i < bounds[k + 1] for k, i in enumerate(a))


def test_sample_frames_timestamps_and_errors() -> None:
    out = sample_frames(10, 5.0, FrameSampling("uniform", 4))
    assert out.indices == [1, 3, 6, 8] and out.timestamps == [0.2, 0.6, 1.2, 1.6]
    with pytest.raises(ValueError, match="needs a torch.Generator"):
        sample_frames(10, 5.0, FrameSampling("random", 4))
    with pytest.raises(ValueError, match="unknown frame sampling mode"):
        FrameSampling("middle", 4)
    with pytest.raises(ValueError, match="at least one frame"):
        uniform_indices(0, 4)


def test_frames_from_video_token_budget() -> None:
    # 476x280 -> 17x10 merged tokens per temporal patch of 2 frames
    assert frames_for_token_budget(170 * 3, 280, 476) == 6
    assert frames_for_token_budget(170 * 3 + 169, 280, 476) == 6
    with pytest.raises(ValueError, match="smaller than one temporal patch"):
        frames_for_token_budget(100, 280, 476)
    with pytest.raises(ValueError, match="multiple of 28"):
        frames_for_token_budget(1000, 270, 480)
