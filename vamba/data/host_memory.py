"""How much host memory the training DataLoader holds for video samples, estimated from the data config.

A sample of ``F`` frames at ``P`` pixels per frame becomes ``pixel_values`` of ``F/2 x P/196`` patches of 1,176
values: ``12 F P`` bytes in float32 (2.26 GiB at 1,024 frames of 588x336), ``3 F P`` in uint8
(``data.pixel_dtype``). While a worker makes one it holds the decoded frames, the resized ones and the patches (in
float32 also the float frames) at once: its peak was 3.55 times the sample's float32 ``pixel_values`` and 3.16 times
its uint8 ones, at 512 and at 1,024 frames (docs/results/data_pipeline_cpu*.json, 2026-12-07). Each worker also keeps
``prefetch_factor`` finished batches in shared memory, and the main process holds the one being used.

At 1,024 frames that is ~8 GiB per busy worker plus ~4.5 GiB of queued batches: twelve workers need ~150 GiB, more
than a 128 GiB host has beside the optimizer states a ZeRO offload keeps there, and the kernel kills the run without
a Python error (SIGKILL, exit code -9; measured on an H100 host, 2026-12-07). ``vamba train`` warns before that.
"""
from __future__ import annotations

import os

GIB = 2**30
# a worker's peak / its sample's pixel_values bytes, per data.pixel_dtype (measured, module docstring)
WORKER_PEAK_FACTOR = {"float32": 3.55, "uint8": 3.16}
PIXEL_BYTES = {"float32": 4, "uint8": 1}
TORCH_PREFETCH = 2  # torch's DataLoader prefetch_factor when none is set (batches queued per worker)


def sample_pixel_bytes(num_frames: int, max_pixels: int, pixel_dtype: str = "float32") -> int:
    """``pixel_values`` bytes of one video sample at most: ``num_frames / 2`` temporal patches of
    ``max_pixels / 14^2`` patches, 3 x 2 x 14 x 14 values each."""
    return (num_frames // 2) * (max_pixels // (14 * 14)) * 1176 * PIXEL_BYTES[pixel_dtype]


def loader_host_bytes(sample_bytes: int, workers: int, batch: int, pixel_dtype: str = "float32",
                      prefetch: int = TORCH_PREFETCH) -> int:
    """Host memory of one DataLoader over samples of ``sample_bytes`` pixel bytes: each worker's peak while making
    one sample, the batches queued (``prefetch`` per worker) and the one in use."""
    peak = WORKER_PEAK_FACTOR[pixel_dtype]
    return int(max(workers, 1) * peak * sample_bytes + (workers * prefetch + 1) * batch * sample_bytes)


def loader_memory_warning(num_frames: int, max_pixels: int, workers: int, batch: int, ranks_per_host: int,
                          host_bytes: int | None, packed_video_tokens: int | None = None,
                          pixel_dtype: str = "float32") -> str | None:
    """A warning naming the keys when the DataLoaders of one host's ranks may hold more than 80 % of its memory
    (None otherwise, or when the host's memory is unknown). ``packed_video_tokens``: a packed row's video budget,
    which bounds its pixels instead of the frames (4 patches of 1,176 float32 values per merged token)."""
    if host_bytes is None or workers == 0:
        return None
    sample = sample_pixel_bytes(num_frames, max_pixels, pixel_dtype)
    if packed_video_tokens is not None:
        sample = max(sample, packed_video_tokens * 4 * 1176 * PIXEL_BYTES[pixel_dtype])
    need = ranks_per_host * loader_host_bytes(sample, workers, batch, pixel_dtype)
    if need <= 0.8 * host_bytes:
        return None
    return (f"the DataLoaders may hold ~{need / GIB:.0f} GiB of host memory ({ranks_per_host} rank(s) on this host x "
            f"data.num_workers={workers}: ~{WORKER_PEAK_FACTOR[pixel_dtype] * sample / GIB:.1f} GiB per busy worker and "
            f"{TORCH_PREFETCH} queued batches of {batch * sample / GIB:.2f} GiB each, at data.num_frames={num_frames}, "
            f"data.max_pixels={max_pixels}, data.pixel_dtype={pixel_dtype}); this host has {host_bytes / GIB:.0f} GiB. Out "
            f"of host memory the kernel kills the run without an error message: lower data.num_workers (or the frames "
            f"or pixels){'; data.pixel_dtype=uint8 needs a quarter of the bytes' if pixel_dtype == 'float32' else ''}")


def host_memory_bytes() -> int | None:
    """Physical memory of this host (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
