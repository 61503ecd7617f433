"""The two ways a caller names the visual inputs, and the one conversion between them (docs/model.md).

- Packed keys (docs/batch.md): ``pixel_values`` + ``grid_thw`` [V, 3] + ``visual_row`` / ``visual_seq_idx`` [V].
- transformers' Qwen2-VL names: ``pixel_values`` + ``image_grid_thw`` (images), ``pixel_values_videos`` +
  ``video_grid_thw`` (videos), each in order of appearance in the batch, optional ``mm_token_type_ids`` [B, N].
  VAMBA prompts carry no image/video pad tokens: every item is marked by one
  ``<|vision_start|><|vision_end|>`` pair, and the ``<|vision_start|>`` tokens of ``input_ids``, row by row and
  left to right, say which row (and, in packed rows, which sample) each item belongs to. ``mm_token_type_ids``
  (0 text, 1 image, 2 video) on a ``<|vision_start|>`` token says whether that marker is an image or a video;
  without it only a batch holding one kind is unambiguous.

``packed_visual_inputs`` recognises the convention (``grid_thw`` vs ``image_grid_thw`` / ``video_grid_thw`` /
``pixel_values_videos`` / ``mm_token_type_ids``), refuses a call that mixes them, and returns the packed keys.
"""
from __future__ import annotations

import torch

PACKED_KEYS = ("pixel_values", "grid_thw", "visual_row", "visual_seq_idx")
TRANSFORMERS_KEYS = ("image_grid_thw", "pixel_values_videos", "video_grid_thw", "mm_token_type_ids")
IMAGE, VIDEO = 1, 2  # mm_token_type_ids values (transformers' convention; 0 = text)


def packed_visual_inputs(input_ids: torch.Tensor | None, vision_start_token_id: int, *,
                     attention_mask: torch.Tensor | None = None, text_seq_idx: torch.Tensor | None = None,
                     pixel_values: torch.Tensor | None = None, grid_thw: torch.Tensor | None = None,
                     visual_row: torch.Tensor | None = None, visual_seq_idx: torch.Tensor | None = None,
                     image_grid_thw: torch.Tensor | None = None, pixel_values_videos: torch.Tensor | None = None,
                     video_grid_thw: torch.Tensor | None = None, mm_token_type_ids: torch.Tensor | None = None,
                     pad_token_ids: dict[str, int | None] | None = None) -> dict[str, torch.Tensor | None]:
    """Either convention in, the packed keys out: ``{pixel_values [P, 1176], grid_thw [V, 3], visual_row [V],
    visual_seq_idx [V] or None}`` with items in marker order (all None: no visual input).

    input_ids / attention_mask / text_seq_idx / mm_token_type_ids: [B, N] (attention_mask may also cover
    cached tokens before these N); ``pad_token_ids``: e.g. ``{"<|image_pad|>": id, "<|video_pad|>": id}``,
    tokens a VAMBA prompt must not hold (their presence means a Qwen2-VL processor wrote the prompt).
    """
    theirs = {k: v for k, v in (("image_grid_thw", image_grid_thw), ("pixel_values_videos", pixel_values_videos),
                                ("video_grid_thw", video_grid_thw), ("mm_token_type_ids", mm_token_type_ids))
              if v is not None}
    ours = {k: v for k, v in (("grid_thw", grid_thw), ("visual_row", visual_row),
                              ("visual_seq_idx", visual_seq_idx)) if v is not None}
    if theirs and ours:
        raise ValueError(f"got {sorted(ours)} (packed keys, docs/batch.md) together with {sorted(theirs)} "
                         f"(transformers' names): pass the visual inputs in one convention")
    if not theirs:
        if pixel_values is not None and grid_thw is None:
            raise ValueError("pixel_values needs grid_thw (packed keys, docs/batch.md) or image_grid_thw "
                             "(transformers' names for images)")
        return {"pixel_values": pixel_values, "grid_thw": grid_thw, "visual_row": visual_row,
                "visual_seq_idx": visual_seq_idx}
    return _convert(input_ids, vision_start_token_id, attention_mask, text_seq_idx, pixel_values, image_grid_thw,
                    pixel_values_videos, video_grid_thw, mm_token_type_ids, pad_token_ids or {})


def _convert(input_ids, vision_start_token_id, attention_mask, text_seq_idx, pixel_values, image_grid_thw,
             pixel_values_videos, video_grid_thw, mm_token_type_ids, pad_token_ids) -> dict[str, torch.Tensor | None]:
    for pixels, grid, pixels_name, grid_name in ((pixel_values, image_grid_thw, "pixel_values", "image_grid_thw"),
                                                 (pixel_values_videos, video_grid_thw, "pixel_values_videos",
                                                  "video_grid_thw")):
        if (pixels is None) != (grid is None):
            given, absent = (pixels_name, grid_name) if grid is None else (grid_name, pixels_name)
            raise ValueError(f"{given} was given without {absent}")
        if grid is not None and pixels.shape[0] != int(grid.prod(-1).sum()):
            raise ValueError(f"{grid_name} implies {int(grid.prod(-1).sum())} patches, {pixels_name} has "
                             f"{pixels.shape[0]}")
    if input_ids is None:
        raise ValueError("transformers' visual input names need input_ids: its <|vision_start|> tokens place "
                         "each image/video in the batch")
    for name, token in pad_token_ids.items():
        if token is not None and bool((input_ids == token).any()):
            raise ValueError(f"input_ids hold {name} tokens (id {token}): a VAMBA prompt marks each image/video with "
                             f"<|vision_start|><|vision_end|> only; write it with VambaProcessor (docs/model.md)")
    b, n = input_ids.shape
    valid = torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask is not None and attention_mask.shape[1] >= n:  # (other widths: forward's own error)
        valid &= attention_mask[:, -n:].bool()
    if text_seq_idx is not None:
        valid &= text_seq_idx >= 0
    is_marker = (input_ids == vision_start_token_id) & valid
    rows, cols = is_marker.nonzero(as_tuple=True)  # row-major: row by row, left to right
    n_images = 0 if image_grid_thw is None else image_grid_thw.shape[0]
    n_videos = 0 if video_grid_thw is None else video_grid_thw.shape[0]
    if mm_token_type_ids is not None:
        if mm_token_type_ids.shape != input_ids.shape:
            raise ValueError(f"mm_token_type_ids has shape {tuple(mm_token_type_ids.shape)}, input_ids "
                             f"{tuple(input_ids.shape)}")
        kinds = mm_token_type_ids[rows, cols].long()
        bad = ((kinds != IMAGE) & (kinds != VIDEO)).nonzero().flatten().tolist()
        if bad:
            r, c = int(rows[bad[0]]), int(cols[bad[0]])
            raise ValueError(f"mm_token_type_ids is {int(kinds[bad[0]])} at the <|vision_start|> token of row {r}, "
                             f"position {c}; it must say {IMAGE} (image) or {VIDEO} (video) there")
        stray = (mm_token_type_ids != 0) & ~is_marker & valid
        if bool(stray.any()):
            r, c = stray.nonzero()[0].tolist()
            raise ValueError(f"mm_token_type_ids is nonzero at row {r}, position {c}, which is not a <|vision_start|> "
                             f"token: VAMBA marks each image/video on its <|vision_start|> token only")
        for kind, count, what in ((IMAGE, n_images, "images (image_grid_thw)"),
                                  (VIDEO, n_videos, "videos (video_grid_thw)")):
            marked = int((kinds == kind).sum())
            if marked != count:
                raise ValueError(f"mm_token_type_ids marks {marked} <|vision_start|> tokens as {what.split()[0]}, "
                                 f"the inputs hold {count} {what}")
    else:
        if n_images and n_videos:
            raise ValueError("the batch holds images and videos: pass mm_token_type_ids (1 image, 2 video on each "
                             "<|vision_start|> token) so each marker can be matched to its item")
        if rows.numel() != n_images + n_videos:
            raise ValueError(f"input_ids hold {rows.numel()} <|vision_start|> tokens (id {vision_start_token_id}), "
                             f"the inputs hold {n_images} image(s) and {n_videos} video(s): one marker per item")
        kinds = torch.full_like(rows, IMAGE if n_images else VIDEO)
    if rows.numel() == 0:
        return {"pixel_values": None, "grid_thw": None, "visual_row": None, "visual_seq_idx": None}
    seq = text_seq_idx[rows, cols].long() if text_seq_idx is not None else None
    if n_images == 0 or n_videos == 0:  # one kind: marker order is the items' own order
        pixels, grid = (pixel_values, image_grid_thw) if n_images else (pixel_values_videos, video_grid_thw)
        return {"pixel_values": pixels, "grid_thw": grid.long(), "visual_row": rows, "visual_seq_idx": seq}
    sources = {IMAGE: (pixel_values, image_grid_thw.long()), VIDEO: (pixel_values_videos, video_grid_thw.long())}
    starts = {k: torch.cat([g.new_zeros(1), g.prod(-1).cumsum(0)]).tolist() for k, (_, g) in sources.items()}
    taken = {IMAGE: 0, VIDEO: 0}
    dtype = pixel_values_videos.dtype
    pieces, grids = [], []
    for kind in kinds.tolist():
        pixels, grid = sources[kind]
        i = taken[kind]
        taken[kind] += 1
        pieces.append(pixels[starts[kind][i]:starts[kind][i + 1]].to(dtype))
        grids.append(grid[i])
    return {"pixel_values": torch.cat(pieces), "grid_thw": torch.stack(grids), "visual_row": rows,
            "visual_seq_idx": seq}
