"""Greedy packing of samples into rows under a text-token and a video-token budget.

The released training packed 124k text / 120k video tokens per row. A sample is ``(text tokens, video
tokens)``; samples are visited in a seeded shuffled order and each goes to the first open row where both
budgets still hold (first-fit over a window of the most recent ``window`` open rows, so planning stays
linear in the dataset size). A sample over either budget on its own cannot be packed and is reported.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PackingPlan:
    """``rows[r]``: sample indices of row ``r`` in order; ``unpackable``: samples over a budget on their own;
    ``missing``: samples with no length (bad samples found while measuring)."""

    rows: list[list[int]]
    text_tokens: list[int] = field(default_factory=list)
    video_tokens: list[int] = field(default_factory=list)
    unpackable: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)

    def fill(self, text_budget: int, video_budget: int) -> dict[str, float]:
        """Mean fraction of each budget used per row."""
        n = max(1, len(self.rows))
        return {"text": sum(self.text_tokens) / (n * text_budget), "video": sum(self.video_tokens) / (n * video_budget)}


def plan_rows(lengths: list[tuple[int, int] | None], text_budget: int, video_budget: int, seed: int = 0,
              shuffle: bool = True, window: int = 64) -> PackingPlan:
    """Pack samples (``lengths[i] = (text tokens, video tokens)``, None for a bad sample) into rows.

    Deterministic given ``seed``. Rows keep the visiting order of their samples.
    """
    if text_budget <= 0 or video_budget < 0:
        raise ValueError(f"budgets must be positive, got text={text_budget}, video={video_budget}")
    order = list(range(len(lengths)))
    if shuffle:
        order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
    plan = PackingPlan([])
    open_rows: list[int] = []  # indices into plan.rows, oldest first
    for i in order:
        if lengths[i] is None:
            plan.missing.append(i)
            continue
        t, v = lengths[i]
        if t > text_budget or v > video_budget:
            plan.unpackable.append(i)
            continue
        for r in open_rows:
            if plan.text_tokens[r] + t <= text_budget and plan.video_tokens[r] + v <= video_budget:
                break
        else:
            plan.rows.append([])
            plan.text_tokens.append(0)
            plan.video_tokens.append(0)
            r = len(plan.rows) - 1
            open_rows.append(r)
            if len(open_rows) > window:
                open_rows.pop(0)
        plan.rows[r].append(i)
        plan.text_tokens[r] += t
        plan.video_tokens[r] += v
    return plan
