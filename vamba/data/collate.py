"""Batches in the layout of docs/batch.md, for padded batches (one sample per row) and packed rows.

Text is right-padded with the pad id; visual items of the whole batch are concatenated in row order, then
sample order, then item order, with ``visual_row`` / ``visual_seq_idx`` telling each item's owner.
"""
from __future__ import annotations

import torch

from vamba.data.chat import IGNORE_INDEX
from vamba.data.dataset import ProcessedSample
from vamba.data.vision import PATCH_DIM


class Collator:
    """``collator(list of ProcessedSample)`` -> padded batch; ``collator(list of rows)`` (a row is a list of
    ``ProcessedSample``, from ``PackedDataset``) -> packed batch with ``text_seq_idx``."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[ProcessedSample] | list[list[ProcessedSample]]) -> dict[str, torch.Tensor]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        packed = isinstance(items[0], list)
        rows = items if packed else [[s] for s in items]
        if any(not row for row in rows):
            raise ValueError("cannot collate an empty row")
        n = max(sum(s.num_text_tokens for s in row) for row in rows)
        B = len(rows)
        input_ids = torch.full((B, n), self.pad_token_id, dtype=torch.long)
        labels = torch.full((B, n), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros(B, n, dtype=torch.long)
        position_ids = torch.zeros(B, n, dtype=torch.long)
        text_seq_idx = torch.full((B, n), -1, dtype=torch.int32)
        pixel_values, grids, visual_row, visual_seq_idx, t_offsets = [], [], [], [], []
        for b, row in enumerate(rows):
            start = 0
            for s, sample in enumerate(row):
                end = start + sample.num_text_tokens
                input_ids[b, start:end] = sample.input_ids
                labels[b, start:end] = sample.labels
                attention_mask[b, start:end] = 1
                position_ids[b, start:end] = torch.arange(sample.num_text_tokens)
                text_seq_idx[b, start:end] = s
                start = end
                pixel_values.append(sample.pixel_values)
                grids.append(sample.grid_thw)
                visual_row += [b] * len(sample.grid_thw)
                visual_seq_idx += [s] * len(sample.grid_thw)
                t_offsets.append(sample.t_offset if sample.t_offset is not None
                                 else torch.zeros(len(sample.grid_thw), dtype=torch.long))
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "position_ids": position_ids,
            "pixel_values": torch.cat(pixel_values) if pixel_values else torch.zeros(0, PATCH_DIM),
            "grid_thw": torch.cat(grids) if grids else torch.zeros(0, 3, dtype=torch.long),
            "visual_row": torch.tensor(visual_row, dtype=torch.long),
            "visual_seq_idx": torch.tensor(visual_seq_idx, dtype=torch.long),
        }
        if packed:
            batch["text_seq_idx"] = text_seq_idx
        if any(s.t_offset is not None for row in rows for s in row):  # context-parallel pieces (docs/batch.md)
            batch["visual_t_offset"] = torch.cat(t_offsets) if t_offsets else torch.zeros(0, dtype=torch.long)
        return batch
