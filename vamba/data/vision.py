"""Frames -> Qwen2-VL patches: VAMBA's edge rule, Qwen2-VL's smart resize, normalisation and patchify.

The pipeline for one visual item (a video's sampled frames, or an image as a one-frame video):

1. ``vamba_resize_size``: the released loader's shortest/longest-edge rule (PIL bicubic), optional;
2. ``smart_resize`` from transformers: each side to a multiple of 28 (Python ``round``), pixel limits;
3. rescale to [0, 1] and normalise with the OPENAI CLIP mean/std;
4. ``patchify``: Qwen2-VL's flattened layout ``[t * h * w, 3 * 2 * 14 * 14]`` and ``grid_thw = (t, h, w)``
   with ``t = T / 2`` temporal patches and ``h, w`` in 14-pixel patches, ordered so that each 2x2 block that
   the vision merger fuses is contiguous.

Odd frame counts: the released VAMBA processor drops the last frame (``odd_frames="drop"``); transformers'
video processor repeats it (``"repeat"``). A single frame (an image) is always duplicated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

try:  # the PIL image processor module needs no torchvision (transformers >= 5.x with PIL backends)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
except ImportError:  # older transformers: the same function in the torchvision-backed module
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
PATCH_DIM = 3 * TEMPORAL_PATCH_SIZE * PATCH_SIZE * PATCH_SIZE  # 1176


def vamba_resize_size(height: int, width: int, shortest_edge: int | None, longest_edge: int | None) -> tuple[int, int]:
    """The released VAMBA loader's target ``(height, width)``.

    If the longer side exceeds ``longest_edge`` it becomes ``longest_edge`` and the other side
    ``int(longest_edge / aspect)`` (truncation); then each side is raised to at least ``shortest_edge``
    (which can change the aspect: 640x360 with longest 360 gives 360x256). ``None`` edges leave it unchanged.
    """
    if shortest_edge is None and longest_edge is None:
        return height, width
    aspect = width / height
    if longest_edge is not None:
        if width >= height and width > longest_edge:
            width, height = longest_edge, int(longest_edge / aspect)
        elif height > width and height > longest_edge:
            height, width = longest_edge, int(longest_edge * aspect)
    if shortest_edge is not None:
        height, width = max(height, shortest_edge), max(width, shortest_edge)
    return height, width


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """``uint8 [T, H, W, 3]`` -> ``uint8 [T, height, width, 3]`` with PIL bicubic (as both the VAMBA loader
    and transformers' PIL image processor do)."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), resample=Image.Resampling.BICUBIC))
                     for f in frames])


def patchify(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised frames ``[T, 3, H, W]`` (T even; H, W multiples of 28) -> Qwen2-VL patches.

    Returns ``pixel_values [t*h*w, 1176]`` and ``grid_thw [1, 3]`` with ``t = T/2, h = H/14, w = W/14``.
    Patch order is (t, h/2, w/2, 2, 2): the 2x2 blocks merged by the vision merger are contiguous. Each row
    is ``(C, temporal 2, 14, 14)`` flattened.
    """
    T, C, H, W = frames.shape
    unit = PATCH_SIZE * MERGE_SIZE
    if T % TEMPORAL_PATCH_SIZE or H % unit or W % unit:
        raise ValueError(f"patchify needs an even frame count and sides divisible by {unit}, got {tuple(frames.shape)}")
    t, h, w = T // TEMPORAL_PATCH_SIZE, H // PATCH_SIZE, W // PATCH_SIZE
    x = frames.reshape(t, TEMPORAL_PATCH_SIZE, C, h // MERGE_SIZE, MERGE_SIZE, PATCH_SIZE,
                       w // MERGE_SIZE, MERGE_SIZE, PATCH_SIZE)
    # (t, tp, C, hb, mh, ph, wb, mw, pw) -> (t, hb, wb, mh, mw, C, tp, ph, pw)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(t * h * w, PATCH_DIM), torch.tensor([[t, h, w]], dtype=torch.long)


@dataclass
class VisionConfig:
    """Resolution and layout settings. ``shortest_edge``/``longest_edge``: VAMBA pre-resize (None: off);
    ``min_pixels``/``max_pixels``: smart_resize limits (transformers' image-processor defaults);
    ``odd_frames``: ``drop`` (released VAMBA) or ``repeat`` (transformers)."""

    shortest_edge: int | None = None
    longest_edge: int | None = None
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    odd_frames: Literal["drop", "repeat"] = "drop"

    def __post_init__(self) -> None:
        if self.odd_frames not in ("drop", "repeat"):
            raise ValueError(f"odd_frames must be 'drop' or 'repeat', got {self.odd_frames!r}")
        # smart_resize divides by them, and a cap under the floor would be ignored without a word
        if not 1 <= self.min_pixels <= self.max_pixels:
            raise ValueError(f"min_pixels={self.min_pixels} and max_pixels={self.max_pixels}: need 1 <= min_pixels "
                             "<= max_pixels")
        for name in ("shortest_edge", "longest_edge"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1 (or None: off)")


def processed_size(height: int, width: int, config: VisionConfig) -> tuple[int, int]:
    """Final ``(height, width)`` of a ``height x width`` source after both resizes."""
    h, w = vamba_resize_size(height, width, config.shortest_edge, config.longest_edge)
    return smart_resize(h, w, factor=PATCH_SIZE * MERGE_SIZE, min_pixels=config.min_pixels,
                        max_pixels=config.max_pixels)


def num_video_tokens(num_frames: int, height: int, width: int, config: VisionConfig) -> int:
    """Tokens the model's video stream gets for ``num_frames`` source frames of ``height x width``."""
    if num_frames <= 0:
        raise ValueError("a visual item needs at least one frame")
    h, w = processed_size(height, width, config)
    t = 1 if num_frames == 1 else (num_frames // 2 if config.odd_frames == "drop" else (num_frames + 1) // 2)
    return t * (h // PATCH_SIZE) * (w // PATCH_SIZE) // MERGE_SIZE**2


_MEAN = torch.tensor(OPENAI_CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
_STD = torch.tensor(OPENAI_CLIP_STD, dtype=torch.float32).view(1, 3, 1, 1)


def process_frames(frames: np.ndarray, config: VisionConfig,
                   normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``uint8 [T, H, W, 3]`` frames of one visual item -> ``(pixel_values [P, 1176], grid_thw [1, 3])``.
    ``normalize=False``: the resized frames' uint8 values in the same patch layout (``normalize_patches`` makes
    them the float32 ``pixel_values``, bit for bit, on any device)."""
    resized = torch.from_numpy(resize_for_patches(frames, config))
    if normalize:
        return patches_from_frames(resized)
    return patchify(resized.permute(0, 3, 1, 2))


# Each patch row is (C, temporal 2, 14, 14) flattened: the channel of column j is j // 392.
_COLUMN_MEAN = _MEAN.flatten().repeat_interleave(PATCH_DIM // 3)
_COLUMN_STD = _STD.flatten().repeat_interleave(PATCH_DIM // 3)


def normalize_patches(patches: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """uint8 patches ``[P, 1176]`` (``process_frames(..., normalize=False)``) -> the float32 ``pixel_values``
    ``patches_from_frames`` gives for the same frames (the same elementwise float32 operations, so bit-equal), on
    the patches' device, then cast to ``dtype``. A float tensor is returned as it is (already normalised)."""
    if patches.dtype != torch.uint8:
        return patches if dtype is None else patches.to(dtype)
    x = patches.float()
    x = (x * (1 / 255) - _COLUMN_MEAN.to(x.device)) / _COLUMN_STD.to(x.device)
    return x if dtype is None else x.to(dtype)


def resize_for_patches(frames: np.ndarray, config: VisionConfig) -> np.ndarray:
    """Steps 1-2 of ``process_frames``: ``uint8 [T, H, W, 3]`` -> ``uint8 [T', H', W', 3]`` with T' even (an image
    duplicated, an odd count per ``config.odd_frames``) and H', W' multiples of 28."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"expected uint8 frames [T>0, H, W, 3], got shape {frames.shape}")
    if frames.shape[0] == 1:
        frames = np.concatenate([frames, frames])  # an image is one temporal patch of a repeated frame
    elif frames.shape[0] % 2:
        frames = frames[:-1] if config.odd_frames == "drop" else np.concatenate([frames, frames[-1:]])
    h, w = vamba_resize_size(frames.shape[1], frames.shape[2], config.shortest_edge, config.longest_edge)
    frames = resize_frames(frames, h, w)
    h, w = smart_resize(h, w, factor=PATCH_SIZE * MERGE_SIZE, min_pixels=config.min_pixels,
                        max_pixels=config.max_pixels)
    return np.ascontiguousarray(resize_frames(frames, h, w))


def patches_from_frames(frames: torch.Tensor, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 3-4 of ``process_frames``: resized ``uint8 [T, H, W, 3]`` (T even, sides multiples of 28; any device)
    -> ``(pixel_values [P, 1176], grid_thw [1, 3])`` on that device, normalised in float32 and then cast to
    ``dtype`` (default float32): on a GPU the same elementwise float32 operations as on the host."""
    x = frames.permute(0, 3, 1, 2).float()
    # NOTE: rescale then normalise in two steps, in float32, exactly as the image processor does.
    x = (x * (1 / 255) - _MEAN.to(x.device)) / _STD.to(x.device)
    pixel_values, grid_thw = patchify(x)
    return (pixel_values if dtype is None else pixel_values.to(dtype)), grid_thw


def load_image(source: str | bytes | Image.Image) -> np.ndarray:
    """An image file, encoded bytes or PIL image -> ``uint8 [1, H, W, 3]`` RGB (a one-frame video)."""
    import io

    if isinstance(source, Image.Image):
        image = source
    else:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        image.load()
    return np.asarray(image.convert("RGB"))[None]
