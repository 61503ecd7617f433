"""Cutting a batch's video along time for context parallelism (docs/context_parallel.md).

Each batch row's visual items, in order, form one sequence of temporal patches; ``plan_row`` cuts it into ``size``
contiguous ranges of whole temporal patches with token counts as even as the patches allow (rank order = time
order). A rank's *pieces* are its parts of the items: a piece is itself a visual item (grid ``(t1 - t0, h, w)``;
the vision tower attends within each temporal patch, so a piece encodes exactly as that part of the whole item)
and ``visual_t_offset`` = t0 places it in its video. ``shard_batch`` applies the plan to a collated batch (the
text keys stay whole: every rank of a group holds the same text); ``vamba.data.dataset`` uses the same plan to
decode only a rank's frames.
"""
from __future__ import annotations

import torch

Piece = tuple[int, int, int]  # (item index within the row, first temporal patch, end temporal patch)


def plan_row(items: list[tuple[int, int]], size: int) -> list[list[Piece]]:
    """Per rank, the pieces of one row.

    items: (temporal patches, tokens per temporal patch) of the row's visual items in order. Cut r (1..size-1)
    falls on the temporal-patch boundary whose token count before it is nearest r / size of the row's tokens
    (never before the previous cut). Ranks may get nothing (fewer patches than ranks, or a text-only row).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    cum = [0]  # tokens before each global patch boundary
    where = []  # (item, t) of each patch
    for i, (t, per_patch) in enumerate(items):
        for k in range(t):
            where.append((i, k))
            cum.append(cum[-1] + per_patch)
    total = cum[-1]
    cuts = [0]
    for r in range(1, size):
        target = total * r / size
        best = min(range(cuts[-1], len(cum)), key=lambda g: (abs(cum[g] - target), g))
        cuts.append(best)
    cuts.append(len(where))
    plans = []
    for r in range(size):
        pieces: list[Piece] = []
        for g in range(cuts[r], cuts[r + 1]):
            i, k = where[g]
            if pieces and pieces[-1][0] == i:
                pieces[-1] = (i, pieces[-1][1], k + 1)
            else:
                pieces.append((i, k, k + 1))
        plans.append(pieces)
    return plans


def shard_batch(batch: dict[str, torch.Tensor], rank: int, size: int) -> dict[str, torch.Tensor]:
    """This rank's part of a collated batch (docs/batch.md layout): the same text keys, the visual keys cut to
    the rank's pieces, plus ``visual_t_offset`` [V_local]."""
    if not 0 <= rank < size:
        raise ValueError(f"rank {rank} is outside a group of {size}")
    grid = batch["grid_thw"]
    rows = batch.get("visual_row", torch.zeros(len(grid), dtype=torch.long))
    seqs = batch.get("visual_seq_idx", torch.zeros(len(grid), dtype=torch.long))
    offsets = batch.get("visual_t_offset", torch.zeros(len(grid), dtype=torch.long))
    patches = grid[:, 1] * grid[:, 2]
    starts = torch.cat([patches.new_zeros(1), (grid[:, 0] * patches).cumsum(0)]).tolist()
    pixel_rows, grids, vrow, vseq, voff = [], [], [], [], []
    for b in sorted(set(rows.tolist())):
        index = (rows == b).nonzero().flatten().tolist()
        plan = plan_row([(int(grid[i, 0]), int(patches[i])) for i in index], size)[rank]
        for item, t0, t1 in plan:
            i = index[item]
            per = int(patches[i])
            pixel_rows.append(torch.arange(starts[i] + t0 * per, starts[i] + t1 * per))
            grids.append([t1 - t0, int(grid[i, 1]), int(grid[i, 2])])
            vrow.append(b)
            vseq.append(int(seqs[i]))
            voff.append(int(offsets[i]) + t0)
    out = {k: v for k, v in batch.items() if k not in ("pixel_values", "grid_thw", "visual_row", "visual_seq_idx",
                                                       "visual_t_offset")}
    pixels = batch["pixel_values"]
    out["pixel_values"] = pixels[torch.cat(pixel_rows)] if pixel_rows else pixels[:0]
    out["grid_thw"] = torch.tensor(grids, dtype=torch.long).reshape(-1, 3)
    out["visual_row"] = torch.tensor(vrow, dtype=torch.long)
    out["visual_seq_idx"] = torch.tensor(vseq, dtype=torch.long)
    out["visual_t_offset"] = torch.tensor(voff, dtype=torch.long)
    return out
