"""Frame indices and pre-resize sizes against values worked out by hand from the official formulas."""
from __future__ import annotations

import pytest

from vamba.data.sampling import uniform_indices
from vamba.data.vision import vamba_resize_size as resize_size
from vamba.evaluation.interface import FrameSettings, VideoRequest
from vamba.evaluation.sampling import frame_indices, mvbench_segment_indices


def test_uniform_midpoints() -> None:
    # integer linspace(0, 10, 5) = [0, 2, 5, 7, 10] -> floor midpoints
    assert uniform_indices(10, 4) == [1, 3, 6, 8]
    assert uniform_indices(10, 1) == [5]
    assert uniform_indices(3, 3) == [0, 1, 2]
    assert uniform_indices(3, 512) == [0, 1, 2]  # fewer frames than asked: every frame once
    with pytest.raises(ValueError):
        uniform_indices(10, 0)


def test_mvbench_segments() -> None:
    # seg = 99/4 = 24.75; index_k = int(12.375 + round(24.75 k)), round half to even: round(49.5) = 50
    assert mvbench_segment_indices(4, fps=10, max_frame=99) == [12, 37, 62, 86]
    # bounds 1-2 s at 10 fps: range 10..20, seg 2.5
    assert mvbench_segment_indices(4, fps=10, max_frame=99, start=1.0, end=2.0) == [11, 13, 16, 19]
    assert mvbench_segment_indices(3, fps=1, max_frame=1) == [0, 0, 1]  # repeats when asking for more


def test_frame_indices_dispatch() -> None:
    uniform = VideoRequest("v.mp4", FrameSettings(4))
    assert frame_indices(uniform, total_frames=10, fps=25) == [1, 3, 6, 8]
    clip = VideoRequest("v.mp4", FrameSettings(4, sampling="mvbench_segments"), start=1.0, end=2.0)
    assert frame_indices(clip, total_frames=100, fps=10) == [11, 13, 16, 19]
    # a 1-based frame folder of 30 frames: range 1..30, seg 14.5 -> int(8.25), int(1 + 7.25 + 14)
    folder = VideoRequest("dir", FrameSettings(2, sampling="mvbench_segments"), is_frame_folder=True,
                          frame_folder_fps=3, first_frame_index=1)
    assert frame_indices(folder, total_frames=30, fps=3) == [8, 22]


@pytest.mark.parametrize("hw, edges, expected", [
    ((360, 640), (256, 480), (270, 480)),
    ((360, 640), (256, 360), (256, 360)),  # raised to the shortest edge: aspect distorted, as released
    ((1080, 1920), (256, 560), (315, 560)),
    ((640, 360), (256, 480), (480, 270)),
    ((100, 200), (256, 480), (256, 256)),
    ((100, 200), (None, None), (100, 200)),
])
def test_resize(hw: tuple[int, int], edges: tuple, expected: tuple[int, int]) -> None:
    assert resize_size(*hw, *edges) == expected
