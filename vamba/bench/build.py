"""The benchmarked models and their inputs: VAMBA and transformers' Qwen2-VL at one scale, random weights.

Scales: ``7b`` and ``2b`` (the Qwen2-VL-7B/2B sizes of ``vamba.models.presets``) and ``tiny`` (CPU checks of the
benchmarks' logic: the presets' tiny model over a ``TINY_VOCAB``-token vocabulary). ``qwen_config`` gives
transformers' ``Qwen2VLConfig`` with VAMBA's text and vision sizes, so the two models differ only in what VAMBA
adds. Inputs are synthetic pixel tensors of the exact Qwen2-VL shape
for a frame size (``frame_grid``: 640x360 -> smart resize 644x364 -> 1196 patches per frame pair).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from vamba.data.vision import MERGE_SIZE, PATCH_DIM, PATCH_SIZE
from vamba.models.presets import tiny_text_vision, tiny_vamba_config
from vamba.utils.provenance import device_name

UNIT = PATCH_SIZE * MERGE_SIZE  # 28: frames are resized to multiples of this
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
TINY_VOCAB = 512
TINY_TEXT, TINY_VISION = tiny_text_vision(TINY_VOCAB)  # the tiny scale's sub-configs, for models built around them


def vamba_config(scale: str, mamba_backend: str):
    """``VambaConfig`` at ``scale`` (``7b``, ``2b`` or ``tiny``) with the Mamba-2 blocks on ``mamba_backend``."""
    from vamba.models.presets import vamba_config_for

    if scale == "tiny":
        return tiny_vamba_config(TINY_VOCAB, mamba={"backend": mamba_backend})
    config = vamba_config_for(scale)
    mamba = dict(config.vision_mamba_mixer_config, backend=mamba_backend)
    return vamba_config_for(scale, vision_mamba_mixer_config=mamba)


def qwen_config(vamba_cfg):
    """transformers' Qwen2VLConfig with the same text and vision sizes (full attention over video + text)."""
    from transformers import Qwen2VLConfig

    config = Qwen2VLConfig(text_config=vamba_cfg.text_config.to_dict(), vision_config=vamba_cfg.vision_config.to_dict(),
                           tie_word_embeddings=vamba_cfg.tie_word_embeddings)
    vocab = config.text_config.vocab_size
    if config.video_token_id >= vocab:  # tiny vocabularies: keep the special ids inside the embedding table
        config.video_token_id, config.image_token_id = vocab - 1, vocab - 2
        config.vision_start_token_id, config.vision_end_token_id = vocab - 3, vocab - 4
    config._attn_implementation = "sdpa"
    return config


def build(cls, config, device: torch.device, dtype: torch.dtype):
    """Random weights created on the device in ``dtype`` (never a full-precision copy on the host)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # what transformers' _from_config(dtype=) does, on every 5.x version
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def frame_grid(width: int, height: int) -> tuple[int, int]:
    """Patch grid (h, w) of one frame after Qwen2-VL's smart resize (multiples of 28, Python round)."""
    h, w = max(UNIT, round(height / UNIT) * UNIT), max(UNIT, round(width / UNIT) * UNIT)
    return h // PATCH_SIZE, w // PATCH_SIZE


def parse_frame_size(text: str) -> tuple[int, int]:
    """``"640x360"`` -> (640, 360): WIDTHxHEIGHT of the source frames."""
    width, height = (int(x) for x in text.lower().split("x"))
    return width, height


def device_tag(device: torch.device) -> tuple[str, str]:
    """(device name, file-name tag): ``"NVIDIA H100 80GB HBM3"`` -> ``"h100"``; the CPU -> ``"cpu"``."""
    name = device_name(device)
    kind = re.search(r"\b([A-Z]+\d{2,4})\b", name)
    return name, kind.group(1).lower() if kind else device.type


@dataclass
class Setup:
    """What every measured step shares: device, dtype, the frame's patch grid and the text lengths."""

    device: torch.device
    dtype: torch.dtype
    grid_hw: tuple[int, int]  # patches per frame (h, w)
    question_tokens: int
    train_tokens: int
    piece_frames: int

    def video_tokens(self, frames: int) -> int:
        h, w = self.grid_hw
        return frames // 2 * (h // MERGE_SIZE) * (w // MERGE_SIZE)

    def pixels(self, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``pixel_values [P, 1176]`` (random) and ``grid_thw [1, 3]`` of one video of ``frames`` frames."""
        h, w = self.grid_hw
        grid = torch.tensor([[frames // 2, h, w]], device=self.device)
        return torch.randn(frames // 2 * h * w, PATCH_DIM, device=self.device, dtype=self.dtype), grid

    def text(self, n: int, vocab: int, avoid: int | None = None) -> torch.Tensor:
        """``[1, n]`` random token ids below the special tokens (``avoid``: an id never drawn)."""
        ids = torch.randint(3, min(vocab - 5, 150000), (1, n), device=self.device)
        return ids if avoid is None else ids.masked_fill(ids == avoid, 3)
