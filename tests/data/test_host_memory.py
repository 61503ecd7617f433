"""The DataLoader's host-memory estimate (vamba.data.host_memory) against the measured data pipeline, and the
warning `vamba train` gives before a run would be killed for host memory."""
from __future__ import annotations

import json
from pathlib import Path

from vamba.data.host_memory import GIB, WORKER_PEAK_FACTOR, loader_memory_warning, sample_pixel_bytes

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def test_pixel_bytes_and_worker_peak_match_the_measured_pipeline():
    for name in ("data_pipeline_cpu.json", "data_pipeline_cpu_float32.json", "data_pipeline_cpu_uint8.json"):
        for point in json.loads((RESULTS / name).read_text())["frames"]:
            dtype = point["data"].get("pixel_dtype", "float32")  # recorded since 2026-12-07 08:45
            for s in point["samples"]:
                own = sample_pixel_bytes(s["frames"], s["height"] * s["width"], dtype)
                assert own == s["pixel_bytes"], (name, s["frames"])
                assert abs(s["worker_peak_gib"] * GIB / own - WORKER_PEAK_FACTOR[dtype]) < 0.1, (name, s["frames"])


def test_warns_when_the_loaders_outgrow_the_host():
    # the H100 host of 2026-12-07: 12 workers at 1,024 frames were killed (SIGKILL) on 125 GiB
    warning = loader_memory_warning(1024, 250_000, 12, 1, 1, 125 * GIB)
    assert warning is not None and "data.num_workers=12" in warning and "125 GiB" in warning
    assert loader_memory_warning(1024, 250_000, 4, 1, 1, 125 * GIB) is None
    assert loader_memory_warning(1024, 250_000, 4, 1, 8, 560 * GIB) is not None  # 8 ranks share the host
    assert loader_memory_warning(1024, 250_000, 0, 1, 1, 125 * GIB) is None  # no workers: the main process
    assert loader_memory_warning(1024, 250_000, 12, 1, 1, None) is None  # unknown host memory: no guess
    # a packed row is bounded by its video budget, not by the frames of one sample
    assert loader_memory_warning(16, 50_176, 8, 1, 1, 64 * GIB, packed_video_tokens=120_000) is not None
    # uint8 pixels (data.pixel_dtype): twelve workers at 1,024 frames fit the same host
    assert loader_memory_warning(1024, 250_000, 12, 1, 1, 125 * GIB, pixel_dtype="uint8") is None
    assert "data.pixel_dtype=uint8 needs a quarter" in warning
