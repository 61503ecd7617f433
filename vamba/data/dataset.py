"""Samples the model can consume: decode -> sample frames -> resize/patchify -> chat tokens and labels.

``SampleProcessor`` turns one ``RawSample`` into a ``ProcessedSample``; ``VambaDataset`` wraps a mixture (or one
source) as a torch ``Dataset`` that skips bad samples with a count (or raises, ``on_error="raise"``) and
``PackedDataset`` serves whole packed rows (see ``vamba.data.packing``). Batches come from
``vamba.data.collate``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vamba.data.chat import DEFAULT_SYSTEM_PROMPT, SampleError, encode_chat, insert_vision_markers
from vamba.data.formats import Media, RawSample, Source
from vamba.data.mixture import Mixture
from vamba.data.released_sampling import auto_num_frames
from vamba.data.sampling import FrameSampling, VideoHeaderError, frames_for_token_budget, sample_frames
from vamba.data.shard import plan_row
from vamba.data.skips import SkipLog
from vamba.data.video import VideoDecodeError, VideoInfo, VideoReadConfig, draw_seed, read_video, video_info
from vamba.data.vision import (
    MERGE_SIZE,
    PATCH_SIZE,
    VisionConfig,
    load_image,
    num_video_tokens,
    process_frames,
    processed_size,
    vamba_resize_size,
)

# What a bad sample may raise; anything else is a bug and propagates.
BAD_SAMPLE_ERRORS = (SampleError, VideoDecodeError)


@dataclass
class ProcessingConfig:
    """Everything that turns records into samples (``SampleProcessor``, ``VambaDataset``).

    ``max_text_tokens`` / ``max_video_tokens``: a sample over either limit is skipped (counted), never cut,
    since a cut reply or a cut video would be a silently wrong sample. ``on_error``: ``skip`` (count, warn,
    take the next sample) or ``raise``. ``skip_log``: JSONL file that collects skips of all workers.
    """

    sampling: FrameSampling = field(default_factory=FrameSampling)
    vision: VisionConfig = field(default_factory=VisionConfig)
    video: VideoReadConfig = field(default_factory=VideoReadConfig)
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    max_text_tokens: int | None = None
    max_video_tokens: int | None = None
    on_error: Literal["skip", "raise"] = "skip"
    max_consecutive_skips: int = 32
    seed: int = 0
    skip_log: str | None = None
    # (rank, size): context parallelism, decode only this rank's temporal patches of each row (vamba.data.shard)
    shard: tuple[int, int] | None = None
    # float32: normalised pixel_values; uint8: the resized frames' values in the same patch layout, a quarter of the
    # bytes and no float work in the worker, normalised where they are used (vision.normalize_patches: bit-equal)
    pixel_dtype: Literal["float32", "uint8"] = "float32"

    def __post_init__(self) -> None:
        if self.on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {self.on_error!r}")
        if self.pixel_dtype not in ("float32", "uint8"):
            raise ValueError(f"data.pixel_dtype must be 'float32' or 'uint8', got {self.pixel_dtype!r}")


@dataclass
class ProcessedSample:
    """One sample. ``input_ids``/``labels``: ``[n]`` long; ``pixel_values``: ``[P, 1176]`` (all its visual
    items, in order); ``grid_thw``: ``[V, 3]``. With context parallelism (``ProcessingConfig.shard``) the visual
    items are this rank's pieces and ``t_offset`` [V] gives each piece's first temporal patch in its item."""

    key: str
    input_ids: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor
    grid_thw: torch.Tensor
    t_offset: torch.Tensor | None = None

    @property
    def num_text_tokens(self) -> int:
        return int(self.input_ids.numel())

    @property
    def num_video_tokens(self) -> int:
        return int(self.grid_thw.prod(-1).sum()) // 4


# What PIL raises for an image file it cannot use. DecompressionBombError (a header declaring more than twice
# PIL's MAX_IMAGE_PIXELS, e.g. a 65-byte PNG claiming 30000x30000) is no OSError: without it here one such file
# stopped `vamba data stats` and `vamba train`.
_IMAGE_ERRORS = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)

# Qwen2-VL's smart_resize refuses a side ratio over 200; checked on the header so packing skips such an image.
MAX_ASPECT_RATIO = 200


def _media_name(source) -> str:
    """How a skip names a visual item: its path, or what it is when it has none (bytes from a shard, a PIL image)."""
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<{source.width}x{source.height} image>"
    return str(source)


def _check_pixels(height: int, width: int, source, max_pixels: int | None) -> None:
    if max_pixels is not None and height * width > max_pixels:
        raise SampleError(f"{_media_name(source)}: a {height}x{width} image (max_frame_pixels={max_pixels})")


def _image_frames(source, max_pixels: int | None = None) -> np.ndarray:
    _check_pixels(*_image_size(source), source, max_pixels)  # from the header, before the pixels are decoded
    try:
        return load_image(source)
    except _IMAGE_ERRORS as e:  # missing, truncated, not an image, a decompression bomb
        raise SampleError(f"cannot read image {_media_name(source)}: {e}") from e


def _image_size(source) -> tuple[int, int]:
    if isinstance(source, Image.Image):
        return source.height, source.width
    import io

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            return im.height, im.width
    except _IMAGE_ERRORS as e:
        raise SampleError(f"cannot read image {_media_name(source)}: {e}") from e


def _check_aspect(height: int, width: int, source) -> None:
    if max(height, width) / max(1, min(height, width)) > MAX_ASPECT_RATIO:
        raise SampleError(f"{_media_name(source)}: aspect ratio of a {height}x{width} frame exceeds {MAX_ASPECT_RATIO}")


class SampleProcessor:
    """``RawSample`` -> ``ProcessedSample`` with a tokenizer that has the Qwen2 special tokens."""

    def __init__(self, tokenizer, config: ProcessingConfig | None = None) -> None:
        self.tokenizer = tokenizer
        self.config = config or ProcessingConfig()
        missing = [t for t in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>")
                   if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
        if missing:
            raise ValueError(f"tokenizer lacks the Qwen2 special tokens {missing}")

    def encode_text(self, raw: RawSample) -> tuple[list[int], list[int]]:
        messages = insert_vision_markers(raw.messages, len(raw.media))
        encoded = encode_chat(messages, self.tokenizer, self.config.system_prompt)
        limit = self.config.max_text_tokens
        if limit is not None and len(encoded.input_ids) > limit:
            raise SampleError(f"{len(encoded.input_ids)} text tokens > max_text_tokens={limit}")
        return encoded.input_ids, encoded.labels

    def _check_video_tokens(self, tokens: int) -> None:
        limit = self.config.max_video_tokens
        if limit is not None and tokens > limit:
            raise SampleError(f"{tokens} video tokens > max_video_tokens={limit}")

    def _video_info(self, source) -> VideoInfo:
        """A video's header, refused (``SampleError`` naming it) when no frame size from it can be resized."""
        info = video_info(source, self.config.video)
        _check_aspect(info.height, info.width, source)
        return info

    def vision_for(self, media: Media | None = None) -> VisionConfig:
        """The resize of one visual item: the config's, with the item's own edges when it has them."""
        if media is None or media.edges is None:
            return self.config.vision
        return dataclasses.replace(self.config.vision, shortest_edge=media.edges[0], longest_edge=media.edges[1])

    def sampling_for(self, info: VideoInfo, media: Media | None = None) -> FrameSampling:
        """The frame sampling of one video (the item's own, else the config's): ``video_tokens`` or the released
        ``patch_budget`` (if set) fixes its frame count."""
        sampling = self.config.sampling if media is None or media.sampling is None else media.sampling
        vision = self.vision_for(media)
        if sampling.patch_budget is not None:
            h, w = vamba_resize_size(info.height, info.width, vision.shortest_edge, vision.longest_edge)
            try:
                num_frames = auto_num_frames(h, w, sampling.patch_budget)
            except ValueError as e:
                raise SampleError(str(e)) from None
            return dataclasses.replace(sampling, num_frames=num_frames, patch_budget=None)
        if sampling.video_tokens is None:
            return sampling
        h, w = processed_size(info.height, info.width, vision)
        try:
            num_frames = frames_for_token_budget(sampling.video_tokens, h, w)
        except ValueError as e:
            raise SampleError(str(e)) from None
        return dataclasses.replace(sampling, num_frames=num_frames)

    def media_patches(self, raw: RawSample) -> list[tuple[int, int]]:
        """``(temporal patches, tokens per temporal patch)`` of each visual item, from headers only."""
        out = []
        for media in raw.media:
            if media.kind == "image":
                height, width = _image_size(media.source)
                _check_pixels(height, width, media.source, self.config.video.max_frame_pixels)
                count = 1
            else:
                info = self._video_info(media.source)
                try:
                    count = len(sample_frames(info.num_frames, info.fps, self.sampling_for(info, media),
                                              torch.Generator()).indices)
                except VideoHeaderError as e:  # fps 0 or NaN in the header, with fps sampling
                    raise SampleError(f"{_media_name(media.source)}: {e}") from e
                height, width = info.height, info.width
            _check_aspect(height, width, media.source)  # before smart_resize, which raises on it
            vision = self.vision_for(media)
            h, w = processed_size(height, width, vision)
            per_patch = (h // PATCH_SIZE) * (w // PATCH_SIZE) // MERGE_SIZE**2
            out.append((num_video_tokens(count, height, width, vision) // per_patch, per_patch))
        return out

    def lengths(self, raw: RawSample) -> tuple[int, int]:
        """``(text tokens, video tokens)`` of a sample from headers only (no frame is decoded beyond the
        first), exactly what ``__call__`` will produce; used to plan packing."""
        input_ids, _ = self.encode_text(raw)
        tokens = sum(t * per for t, per in self.media_patches(raw))
        self._check_video_tokens(tokens)
        return len(input_ids), tokens

    def _frames(self, media: Media, generator: torch.Generator, patches: tuple[int, int] | None = None) -> np.ndarray:
        if media.kind == "image":
            return _image_frames(media.source, self.config.video.max_frame_pixels)
        sampling = self.config.sampling if media.sampling is None else media.sampling
        if sampling.video_tokens is not None or sampling.patch_budget is not None:
            sampling = self.sampling_for(self._video_info(media.source), media)
        positions = None if patches is None else slice(2 * patches[0], 2 * patches[1])  # 2 frames a patch
        return read_video(media.source, sampling, self.config.video, generator, positions).frames

    def __call__(self, raw: RawSample, generator: torch.Generator | None = None,
                 pieces: list[tuple[int, int] | None] | None = None) -> ProcessedSample:
        """The processed sample; ``pieces`` (context parallelism): per visual item the temporal patches
        ``(t0, t1)`` to decode, or None for an item held by another rank (None: every item whole)."""
        generator = generator or torch.Generator().manual_seed(self.config.seed)
        input_ids, labels = self.encode_text(raw)
        if pieces is None and self.config.max_video_tokens is not None:
            # from the headers, before any frame is decoded at full size (a sample over the limit costs no decode)
            self._check_video_tokens(sum(t * per for t, per in self.media_patches(raw)))
        if pieces is not None and len(pieces) != len(raw.media):
            raise ValueError(f"{raw.key}: {len(pieces)} pieces for {len(raw.media)} visual items")
        pixel_values, grids, offsets = [], [], []
        for i, media in enumerate(raw.media):
            piece = None if pieces is None else pieces[i]
            if pieces is not None and piece is None:
                if media.kind == "video":
                    draw_seed(generator)  # as read_video would: the next videos sample the same frames
                continue
            frames = self._frames(media, generator, piece)
            _check_aspect(*frames.shape[1:3], media.source)
            pv, grid = process_frames(frames, self.vision_for(media), normalize=self.config.pixel_dtype == "float32")
            if piece is not None and int(grid[0, 0]) != piece[1] - piece[0]:
                raise SampleError(f"decoded {int(grid[0, 0])} temporal patches for the piece {piece} of item {i}")
            pixel_values.append(pv)
            grids.append(grid)
            offsets.append(0 if piece is None else piece[0])
        grid_thw = torch.cat(grids) if grids else torch.zeros(0, 3, dtype=torch.long)
        pixel_values = (torch.cat(pixel_values) if pixel_values else
                        torch.zeros(0, 1176, dtype=getattr(torch, self.config.pixel_dtype)))
        sample = ProcessedSample(raw.key, torch.tensor(input_ids, dtype=torch.long),
                                 torch.tensor(labels, dtype=torch.long), pixel_values, grid_thw,
                                 None if pieces is None else torch.tensor(offsets, dtype=torch.long))
        if pieces is None:
            self._check_video_tokens(sample.num_video_tokens)
        else:
            self._check_video_tokens(sum(t * per for t, per in self.media_patches(raw)))
        return sample


class VambaDataset(torch.utils.data.Dataset):
    """Processed samples of a mixture or a single source.

    A bad sample (see ``BAD_SAMPLE_ERRORS``) is counted in ``skips`` with a rate-limited warning and replaced
    by the next index (deterministic); ``max_consecutive_skips`` bad samples in a row is an error, since
    that means a broken source, not a bad file. Random frame sampling is seeded by (seed, epoch, index).
    """

    def __init__(self, data: Mixture | Source, tokenizer, config: ProcessingConfig | None = None) -> None:
        self.data = data
        self.config = config or ProcessingConfig()
        self.processor = SampleProcessor(tokenizer, self.config)
        self.skips = SkipLog(self.config.skip_log)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data)

    def generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.config.seed * 1_000_003 + self.epoch) * 10_000_019 + index)

    def _skip(self, key: str, error: Exception) -> None:
        if self.config.on_error == "raise":
            raise error
        self.skips.record(type(error).__name__, key, str(error))

    def try_plan(self, index: int) -> tuple[RawSample, list[tuple[int, int]]] | None:
        """Sample ``index``'s record and its visual items' ``media_patches`` (headers only), or None after counting
        it as skipped. Every context-parallel rank reads the same headers, so they all skip alike."""
        key = f"#{index}"
        try:
            raw = self.data.get(index)
            key = raw.key
            return raw, self.processor.media_patches(raw)
        except BAD_SAMPLE_ERRORS as e:
            self._skip(key, e)
            return None

    def try_get(self, index: int, pieces: list[tuple[int, int] | None] | None = None) -> ProcessedSample | None:
        """Sample ``index``, or None after counting it as skipped (``on_error="skip"``). With ``config.shard`` a
        sample is its own row: only this rank's temporal patches are decoded (``pieces`` overrides the plan)."""
        key = f"#{index}"
        try:
            if self.config.shard is not None and pieces is None:
                planned = self.try_plan(index)
                if planned is None:
                    return None
                raw, patches = planned
                pieces = shard_pieces([patches], *self.config.shard)[0]
            else:
                raw = self.data.get(index)
            key = raw.key
            return self.processor(raw, self.generator(index), pieces)
        except BAD_SAMPLE_ERRORS as e:
            self._skip(key, e)
            return None

    def __getitem__(self, index: int) -> ProcessedSample:
        for attempt in range(self.config.max_consecutive_skips):
            sample = self.try_get((index + attempt) % len(self))
            if sample is not None:
                return sample
        raise RuntimeError(f"{self.config.max_consecutive_skips} consecutive bad samples from index {index}: "
                           f"{self.skips.report()}")

    def measure(self) -> list[tuple[int, int] | None]:
        """``(text tokens, video tokens)`` per sample from headers; None (and a counted skip) when bad."""
        out: list[tuple[int, int] | None] = []
        for i in range(len(self)):
            key = f"#{i}"
            try:
                raw = self.data.get(i)
                key = raw.key
                out.append(self.processor.lengths(raw))
            except BAD_SAMPLE_ERRORS as e:
                if self.config.on_error == "raise":
                    raise
                self.skips.record(type(e).__name__, key, str(e))
                out.append(None)
        return out


class MemoryCache(torch.utils.data.Dataset):
    """A ``VambaDataset`` whose processed samples are kept after their first read (decoding is the cost of a small
    CPU run: ``data.cache_in_memory``, the demo). Only for deterministic frame sampling: every epoch would otherwise
    see other frames."""

    def __init__(self, dataset: VambaDataset) -> None:
        self.dataset = dataset
        self.samples: dict[int, ProcessedSample] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> ProcessedSample:
        if index not in self.samples:
            self.samples[index] = self.dataset[index]
        return self.samples[index]

    def try_get(self, index: int) -> ProcessedSample | None:
        if index not in self.samples:
            sample = self.dataset.try_get(index)
            if sample is None:
                return None
            self.samples[index] = sample
        return self.samples[index]

    def measure(self) -> list[tuple[int, int] | None]:
        return self.dataset.measure()

    @property
    def config(self) -> ProcessingConfig:
        return self.dataset.config

    @property
    def skips(self) -> SkipLog:
        return self.dataset.skips


def set_data_epoch(dataset: torch.utils.data.Dataset, epoch: int) -> None:
    """Set the epoch that seeds random frame draws on the ``VambaDataset`` inside ``dataset``, through the
    wrappers around it (``PackedDataset``, ``MemoryCache``, ``torch.utils.data.Subset``: each keeps the
    dataset it wraps in ``.dataset``). A dataset without one (none of ours) is left as it is."""
    while dataset is not None:
        if isinstance(dataset, VambaDataset):
            dataset.set_epoch(epoch)
            return
        dataset = getattr(dataset, "dataset", None)


class PackedDataset(torch.utils.data.Dataset):
    """Rows of a packing plan: item ``r`` is the list of processed samples of row ``r`` (bad ones dropped and
    counted). A row whose samples all fail is replaced by the next row."""

    def __init__(self, dataset: VambaDataset, rows: list[list[int]]) -> None:
        self.dataset = dataset
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, row: int) -> list[ProcessedSample]:
        for attempt in range(self.dataset.config.max_consecutive_skips):
            samples = self._row(self.rows[(row + attempt) % len(self.rows)])
            if samples:
                return samples
        raise RuntimeError(f"{self.dataset.config.max_consecutive_skips} consecutive empty rows from row {row}")

    def _row(self, indices: list[int]) -> list[ProcessedSample]:
        shard = self.dataset.config.shard
        if shard is None:
            return [s for i in indices if (s := self.dataset.try_get(i)) is not None]
        # context parallelism: the row's items are cut as one sequence (vamba.data.shard), from headers
        planned = [(i, p) for i in indices if (p := self.dataset.try_plan(i)) is not None]
        pieces = shard_pieces([patches for _, (_, patches) in planned], *shard)
        return [s for (i, _), own in zip(planned, pieces) if (s := self.dataset.try_get(i, own)) is not None]


def shard_pieces(samples: list[list[tuple[int, int]]], rank: int, size: int) -> list[list[tuple[int, int] | None]]:
    """Per sample of one row (its visual items' ``(temporal patches, tokens per patch)``), per item: this rank's
    ``(t0, t1)`` or None (``vamba.data.shard.plan_row`` over the row's items in order)."""
    owner = [(s, m) for s, items in enumerate(samples) for m in range(len(items))]
    pieces: list[list[tuple[int, int] | None]] = [[None] * len(items) for items in samples]
    for item, t0, t1 in plan_row([it for items in samples for it in items], size)[rank]:
        s, m = owner[item]
        pieces[s][m] = (t0, t1)
    return pieces
