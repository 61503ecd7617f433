"""Per-question records: append-only JSONL shards (one per rank), resume by question id, merge.

A record is written, flushed and fsync'ed as soon as its question is answered, so a killed run loses at
most the question in flight. Restarting reads every shard of the run directory (whatever world size
wrote it), skips the ids found, and never writes an id twice.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from vamba.utils.io import append_jsonl, read_jsonl

SHARD_DIR = "shards"


def shard_path(run_dir: Path, rank: int) -> Path:
    return run_dir / SHARD_DIR / f"rank{rank}.jsonl"


def _repair_torn_tail(path: Path) -> None:
    """Cut a partial last line (a crash mid-write) so the next append starts on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


class RecordStore:
    """This rank's append-only shard plus the ids already answered by any rank of the run."""

    def __init__(self, run_dir: Path, rank: int = 0) -> None:
        self.path = shard_path(run_dir, rank)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _repair_torn_tail(self.path)
        self.done: set[str] = {r["qid"] for r in read_all(run_dir)}

    def append(self, record: dict[str, Any]) -> None:
        if record["qid"] in self.done:
            raise ValueError(f"question {record['qid']!r} already has a record in {self.path.parent}")
        append_jsonl(self.path, [record])
        self.done.add(record["qid"])


def read_all(run_dir: Path) -> list[dict[str, Any]]:
    """Every record in every shard of ``run_dir``, first occurrence of each id kept."""
    seen: set[str] = set()
    out = []
    for path in sorted((run_dir / SHARD_DIR).glob("rank*.jsonl")):
        for record in read_jsonl(path):
            if record["qid"] not in seen:
                seen.add(record["qid"])
                out.append(record)
    return out


def order_by(records: Iterable[dict[str, Any]], qids: Sequence[str]) -> list[dict[str, Any]]:
    """Records in benchmark order (ids not in ``qids`` last, in their given order)."""
    rank = {qid: i for i, qid in enumerate(qids)}
    return sorted(records, key=lambda r: rank.get(r["qid"], len(rank)))
