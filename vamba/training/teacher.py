"""The distillation teacher's logits at the student's text positions (paper Sec. 3.3).

The teacher, the source Qwen2-VL, runs once on the batch's Qwen2-VL view (``vamba.data.teacher_view``); its LM head
is applied only at the positions of the student's supervised text tokens.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from vamba.data.teacher_view import TeacherView


@torch.no_grad()
def teacher_logits_at(teacher: nn.Module, view: TeacherView, student_positions: Tensor) -> Tensor:
    """Teacher logits [T, V] at the given student text positions ``[T, 2]`` (row, column).

    Runs the teacher's backbone once and applies its LM head only where needed: the full
    [rows, video+text, vocab] logits of an hour of video would not fit anywhere.
    """
    hidden = teacher.model(**view.inputs).last_hidden_state  # [rows, N_teacher, d]
    lookup = {tuple(p): i for i, p in enumerate(view.student_pos.tolist())}
    try:
        index = torch.tensor([lookup[tuple(p)] for p in student_positions.tolist()], dtype=torch.long)
    except KeyError as e:
        raise ValueError(f"student position {e.args[0]} is padding: no teacher twin") from None
    tpos = view.teacher_pos[index]
    return teacher.lm_head(hidden[tpos[:, 0], tpos[:, 1]])
