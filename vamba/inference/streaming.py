"""Streaming video prefill: a video of any length goes through the model in pieces of frames.

VAMBA's video stream never reads text and its only sequence mixing is the Mamba-2 scan (paper Sec. 3),
so a video can be encoded piece by piece: each piece of frames is vision-encoded, then pushed through
every layer, where its cross-attention K/V are written into a pre-allocated ``VideoCache`` and the
layer's Mamba-2 block carries its conv and SSM state (``Mamba2State``) on to the next piece. Peak memory
is the weights + the K/V cache + one piece's activations, whatever the video's length; the result
equals ``VambaForConditionalGeneration.encode_video`` on the whole video (tests/inference).

    stream = VideoStream(model, total_grid=(t, h, w))     # t temporal patches (2 frames each) in all
    for pixel_values, grid_thw in pieces:                  # [P, 1176], [1, 3]; grid (t_i, h, w), sum t_i = t
        stream.push(pixel_values, grid_thw)
    cache = stream.finish()                                # VideoCache for generate(video_cache=...)
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from vamba.models.cache import VideoCache
from vamba.models.mamba2 import Mamba2State


class VideoStream:
    """Incremental encoder of one video into a ``VideoCache`` (batch of one row).

    total_grid: (t, h, w) patch grid of the whole video; its ``t * h * w / merge**2`` video tokens size the
    cache, allocated once up front (appending by concatenation would need twice the cache at the end).
    """

    def __init__(self, model, total_grid: tuple[int, int, int]) -> None:
        t, h, w = (int(x) for x in total_grid)
        merge = model.config.vision_config.spatial_merge_size
        if t < 1 or h % merge or w % merge:
            raise ValueError(f"total_grid {total_grid}: need t >= 1 and h, w divisible by {merge}")
        self.model = model
        self.grid = (t, h, w)
        self.tokens_per_patch = (h // merge) * (w // merge)
        self.total_tokens = t * self.tokens_per_patch
        text = model.config.text_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        weight = model.lm_head.weight
        shape = (1, text.num_key_value_heads, self.total_tokens, head_dim)
        layers = len(model.model.layers)
        self.keys = [torch.empty(shape, device=weight.device, dtype=weight.dtype) for _ in range(layers)]
        self.values = [torch.empty(shape, device=weight.device, dtype=weight.dtype) for _ in range(layers)]
        self.states: list[Mamba2State | None] | None = None
        self.t_done = 0

    @property
    def done(self) -> bool:
        return self.t_done == self.grid[0]

    @torch.no_grad()
    def push(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> None:
        """Encode the next piece: pixel_values [P, 1176], grid_thw [1, 3] = (t_i, h, w)."""
        t_i, h, w = (int(x) for x in grid_thw.reshape(-1).tolist())
        if (h, w) != self.grid[1:]:
            raise ValueError(f"piece grid {(t_i, h, w)} does not match the video's (h, w) = {self.grid[1:]}")
        if self.t_done + t_i > self.grid[0]:
            raise ValueError(f"piece of {t_i} temporal patches overflows the video's {self.grid[0]} "
                             f"({self.t_done} already encoded)")
        device = self.model.lm_head.weight.device
        start = self.t_done * self.tokens_per_patch
        stop = start + t_i * self.tokens_per_patch

        def write_kv(layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
            # Each layer's K/V go into the cache as soon as they exist (one layer's piece K/V alive at a time).
            self.keys[layer][:, :, start:stop] = k
            self.values[layer][:, :, start:stop] = v

        _, _, self.states = self.model.encode_video_piece(
            pixel_values.to(device, non_blocking=True), grid_thw.to(device), self.states, t_offset=self.t_done,
            write_kv=write_kv)
        self.t_done += t_i

    def finish(self) -> VideoCache:
        """The cache of the whole video (every piece must have been pushed)."""
        if not self.done:
            raise ValueError(f"video incomplete: {self.t_done} of {self.grid[0]} temporal patches encoded")
        self.states = None  # the Mamba-2 states are not needed any more
        segments = torch.zeros(1, self.total_tokens, dtype=torch.long, device=self.keys[0].device)
        return VideoCache(self.keys, self.values, segments)


def stream_video(model, pieces: Iterable[tuple[torch.Tensor, torch.Tensor]], total_grid: tuple[int, int, int],
                 on_piece: Callable[[int], None] | None = None) -> VideoCache:
    """Encode a video given as pieces ``(pixel_values, grid_thw)``; ``on_piece(t_i)`` after each one
    (progress bars). Returns the ``VideoCache`` (one row)."""
    stream = VideoStream(model, total_grid)
    for pixel_values, grid_thw in pieces:
        stream.push(pixel_values, grid_thw)
        if on_piece is not None:
            on_piece(int(grid_thw[0, 0]))
    return stream.finish()


def split_patches(pixel_values: torch.Tensor, grid_thw: torch.Tensor, piece_t: int
                  ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut one video's patches ([t*h*w, 1176], grid [1, 3]) into pieces of ``piece_t`` temporal patches
    (views, no copy; Qwen2-VL's patch order is temporal-major)."""
    t, h, w = (int(x) for x in grid_thw.reshape(-1).tolist())
    if piece_t < 1:
        raise ValueError(f"piece_t must be >= 1, got {piece_t}")
    per_t = h * w
    return [(pixel_values[s * per_t:min(s + piece_t, t) * per_t],
             torch.tensor([[min(piece_t, t - s), h, w]], dtype=torch.long))
            for s in range(0, t, piece_t)]
