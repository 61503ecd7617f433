"""Counted, rate-limited reporting of skipped samples (bad media, malformed records, over-long samples).

Each process counts its own skips; with ``path`` set every skip is also appended as one JSON line, so the
counts of all DataLoader workers (separate processes) can be summed at the end with ``summary()``.
"""
from __future__ import annotations

import collections
import logging
import os
from pathlib import Path

from vamba.utils.io import append_jsonl, read_jsonl
from vamba.utils.logging import get_logger

logger = get_logger("vamba.data")


class SkipLog:
    """``record(reason, key, detail)`` counts a skip and warns for the first ``warn_first`` skips of each
    reason, then only at the 10th, 100th, 1000th... (so a broken source cannot flood the log)."""

    def __init__(self, path: str | os.PathLike | None = None, warn_first: int = 5) -> None:
        self.path = Path(path) if path is not None else None
        self.warn_first = warn_first
        self.counts: collections.Counter[str] = collections.Counter()

    def record(self, reason: str, key: str, detail: str) -> None:
        self.counts[reason] += 1
        n = self.counts[reason]
        if n <= self.warn_first or (n >= 10 and str(n).strip("0") == "1"):
            suffix = f" (skip #{n} for this reason)" if n > self.warn_first else ""
            logger.log(logging.WARNING, f"skipping sample {key} [{reason}]: {detail}{suffix}")
        if self.path is not None:
            append_jsonl(self.path, [{"reason": reason, "key": key, "detail": detail[:500], "pid": os.getpid()}])

    def summary(self) -> dict[str, int]:
        """Skips per reason: of every process that wrote to ``path`` when set, else of this process."""
        if self.path is None:
            return dict(self.counts)
        return dict(collections.Counter(r["reason"] for r in read_jsonl(self.path)))

    def report(self) -> str:
        counts = self.summary()
        if not counts:
            return "no samples skipped"
        return f"skipped {sum(counts.values())} samples: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
