"""A VAMBA batch (docs/batch.md) as transformers' Qwen2-VL reads it: the teacher's view.

VAMBA's text has no video pad tokens (video enters through cross-attention); the teacher, the source
Qwen2-VL, attends over video + text in one sequence. For each sample this builds the teacher's input by
inserting ``t*h*w/4`` ``<|video_pad|>`` tokens after every ``<|vision_start|>`` (images are videos of one
temporal patch, as in the student) and records where each student text token sits in it, so that the
teacher's logits can be read at exactly the student's positions (``vamba.training.teacher``): student and
teacher next-token distributions line up. The same view trains a Qwen2-VL on VAMBA's data
(``teacher_training_batch``) and lets a Qwen2-VL answer benchmark questions
(``vamba.inference.qwen2vl_video_qa``).

Packed student rows are unpacked: the teacher sees one sample per row (its own M-RoPE positions and
causal mask are then exactly those of the pretrained model).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vamba.data.vision import MERGE_SIZE, normalize_patches


@dataclass
class TeacherView:
    inputs: dict[str, Tensor]  # keyword arguments for Qwen2VLForConditionalGeneration / Qwen2VLModel
    student_pos: Tensor        # [T, 2] (row, column) of each student text token that has a teacher twin
    teacher_pos: Tensor        # [T, 2] (teacher row, teacher column) of that token


def build_teacher_view(batch: dict[str, Tensor], *, vision_start_id: int, video_pad_id: int, pad_id: int) -> TeacherView:
    """Teacher inputs for a batch in the ``docs/batch.md`` layout (padded or packed rows)."""
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    grid_thw = batch.get("grid_thw", torch.zeros(0, 3, dtype=torch.long))
    visual_row = batch.get("visual_row", torch.zeros(0, dtype=torch.long))
    visual_seq = batch.get("visual_seq_idx", torch.zeros_like(visual_row))
    text_seq_idx = batch.get("text_seq_idx")
    n_patches = grid_thw.prod(-1) if len(grid_thw) else torch.zeros(0, dtype=torch.long)
    patch_start = torch.cumsum(n_patches, 0) - n_patches

    rows, student_pos, teacher_pos, items = [], [], [], []
    for b in range(input_ids.shape[0]):
        seq = text_seq_idx[b] if text_seq_idx is not None else torch.where(attention_mask[b] > 0, 0, -1)
        for s in sorted(set(seq[seq >= 0].tolist())):
            cols = (seq == s).nonzero().flatten().tolist()
            sample_items = ((visual_row == b) & (visual_seq == s)).nonzero().flatten().tolist()
            ids: list[int] = []
            pending = list(sample_items)
            for c in cols:
                token = int(input_ids[b, c])
                student_pos.append((b, c))
                teacher_pos.append((len(rows), len(ids)))
                ids.append(token)
                if token == vision_start_id:
                    if not pending:
                        raise ValueError(f"row {b} sample {s}: more <|vision_start|> markers than visual items")
                    item = pending.pop(0)
                    ids.extend([video_pad_id] * (int(n_patches[item]) // MERGE_SIZE**2))  # merged tokens
                    items.append(item)
            if pending:
                raise ValueError(f"row {b} sample {s}: {len(pending)} visual item(s) without a <|vision_start|> marker")
            rows.append(ids)

    width = max(len(r) for r in rows)
    teacher_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, ids in enumerate(rows):
        teacher_ids[r, : len(ids)] = torch.tensor(ids)
        mask[r, : len(ids)] = 1
    inputs: dict[str, Tensor] = {"input_ids": teacher_ids, "attention_mask": mask}
    if items:
        order = torch.tensor(items)
        pixel_values = normalize_patches(batch["pixel_values"])  # data.pixel_dtype=uint8: the teacher's float32
        inputs["pixel_values_videos"] = torch.cat(
            [pixel_values[patch_start[i] : patch_start[i] + n_patches[i]] for i in items])
        inputs["video_grid_thw"] = grid_thw[order]
        inputs["mm_token_type_ids"] = (teacher_ids == video_pad_id).int() * 2  # 2 = video in Qwen2-VL
    return TeacherView(inputs, torch.tensor(student_pos), torch.tensor(teacher_pos))


def teacher_training_batch(batch: dict[str, Tensor], *, vision_start_id: int, video_pad_id: int,
                           pad_id: int) -> dict[str, Tensor]:
    """Qwen2-VL training inputs for a VAMBA batch: the teacher view plus ``labels`` moved to the teacher's
    positions (-100 on video pads). Trains a transformer on exactly the data a VAMBA run sees."""
    view = build_teacher_view(batch, vision_start_id=vision_start_id, video_pad_id=video_pad_id, pad_id=pad_id)
    labels = torch.full_like(view.inputs["input_ids"], -100)
    s, t = view.student_pos, view.teacher_pos
    labels[t[:, 0], t[:, 1]] = batch["labels"][s[:, 0], s[:, 1]]
    return {**view.inputs, "labels": labels}
