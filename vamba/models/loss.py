"""Next-token cross-entropy on text labels, chunked so the full [B, N, V] float32 logits never exist."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def shift_targets(labels: torch.Tensor, segments: torch.Tensor | None = None) -> torch.Tensor:
    """[B, N] labels -> [B, N-1] targets of positions 0..N-2 (token t predicts label t+1).

    ``segments`` [B, N] (packed rows): a target is dropped where token t and t+1 belong to different
    samples, so no sample learns to predict the next one's first token.
    """
    targets = labels[:, 1:]
    if segments is not None:
        targets = targets.masked_fill(segments[:, 1:] != segments[:, :-1], IGNORE_INDEX)
    return targets


def _chunk_loss(hidden: torch.Tensor, targets: torch.Tensor, lm_head: nn.Module) -> torch.Tensor:
    logits = lm_head(hidden).float()
    return F.cross_entropy(logits, targets, reduction="sum")


def chunked_lm_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_head: nn.Module, chunk_size: int,
                    segments: torch.Tensor | None = None,
                    num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled tokens.

    hidden [B, N, D] final-norm text states; labels [B, N] (-100 = no loss), not shifted. Only the
    labelled positions go through ``lm_head``, ``chunk_size`` rows at a time; under autograd each chunk
    is recomputed in backward, so at most one chunk of float32 logits is alive. ``num_items_in_batch``
    (HF Trainer, gradient accumulation) replaces the local token count as the denominator.
    """
    targets = shift_targets(labels, segments)
    keep = targets != IGNORE_INDEX
    h = hidden[:, :-1][keep]
    t = targets[keep]
    total = hidden.new_zeros((), dtype=torch.float32)
    if t.numel() == 0:
        # Keep the graph connected (every parameter still takes part: ZeRO-3 / DDP need it).
        total = total + hidden.sum().float() * 0.0
    for start in range(0, t.numel(), chunk_size):
        hc, tc = h[start:start + chunk_size], t[start:start + chunk_size]
        if torch.is_grad_enabled() and hc.requires_grad:
            total = total + checkpoint(_chunk_loss, hc, tc, lm_head, use_reentrant=False)
        else:
            total = total + _chunk_loss(hc, tc, lm_head)
    denom = num_items_in_batch if num_items_in_batch is not None else max(int(t.numel()), 1)
    if isinstance(denom, torch.Tensor):
        denom = denom.to(total.device)
    return total / denom


def lm_loss_ref(logits: torch.Tensor, labels: torch.Tensor, segments: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: full float32 logits [B, N, V], shifted labels, mean over labelled tokens."""
    targets = shift_targets(labels, segments)
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)
