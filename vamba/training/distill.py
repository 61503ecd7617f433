"""Distillation loss (paper: L = L_LM + lambda * L_distill), on the next-token distributions of text tokens.

The teacher is the source Qwen2-VL with full self-attention over video + text. Two sources give the
*same* loss, so a run with a cached teacher is reproducible against one with the teacher online:

- online: the teacher's logits for the batch; its top-k is taken here exactly as the cache writer does.
- cached: the teacher's top-k (values, indices) written beforehand by ``vamba distill-cache``.

Loss, per supervised position t (positions whose *next* token has a label) with teacher top-k
indices I_t:  KL( softmax(z^T_t[I_t]) || softmax(z^S_t[I_t]) ), both distributions renormalised over
the teacher's top-k, as in the released VAMBA training. ``top_k=None`` uses the full vocabulary.
The mean is over supervised positions of the whole batch.

NOTE: the official code averages per sample, then over samples ("batchmean" per sample), and gathers
student logits at positions where the *unshifted* label is valid; we use the shifted positions (the
logit at t predicts token t+1) and a token mean, which weights every supervised token equally.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vamba.data.chat import IGNORE_INDEX


def supervised_positions(labels: Tensor) -> Tensor:
    """Boolean mask [B, N]: logit at (b, t) predicts a labelled token labels[b, t+1]."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask


def teacher_topk(teacher_logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k of teacher logits [T, V] -> (values float32 [T, k], indices int64 [T, k]), sorted descending."""
    values, indices = torch.topk(teacher_logits.float(), k, dim=-1, sorted=True)
    return values, indices


def topk_kl(student_logits: Tensor, teacher_values: Tensor, teacher_indices: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) over the teacher's top-k support, mean over the T positions.

    Args:
        student_logits: [T, V] student logits at supervised positions (any float dtype; computed in fp32).
        teacher_values: [T, K] teacher logits at its top-k tokens.
        teacher_indices: [T, K] vocabulary ids of those tokens.
    """
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0  # keeps the graph (and every rank's backward) alive
    s = student_logits.float().gather(-1, teacher_indices.long()) / temperature
    t = teacher_values.float() / temperature
    log_p_s = F.log_softmax(s, dim=-1)
    log_p_t = F.log_softmax(t, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return kl.mean() * temperature**2


def full_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) over the full vocabulary, mean over positions. Both [T, V]."""
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean() * temperature**2


def distillation_loss(
    student_logits: Tensor,
    teacher: Tensor | tuple[Tensor, Tensor],
    top_k: int | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """Distillation loss on supervised positions.

    Args:
        student_logits: [T, V] at supervised positions (see ``supervised_positions``).
        teacher: online teacher logits [T, V], or cached top-k ``(values [T, K], indices [T, K])``.
        top_k: with online logits, restrict to the teacher's top-k (None = full vocabulary). Ignored
            for cached input, whose K is fixed by the cache.
    """
    if isinstance(teacher, tuple):
        values, indices = teacher
        return topk_kl(student_logits, values, indices, temperature)
    if top_k is None:
        return full_kl(student_logits, teacher, temperature)
    values, indices = teacher_topk(teacher, top_k)
    return topk_kl(student_logits, values, indices, temperature)
