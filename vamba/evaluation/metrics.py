"""Accuracy and its breakdowns over per-question records (dicts with ``correct`` and ``meta``).

All accuracies are percentages in [0, 100], unrounded. A breakdown groups records by a ``meta`` field;
a list-valued field puts a record in every group it names (LVBench's overlapping question types). A group
without any answered question has no accuracy (``acc`` is ``None``, not 0.0): a question type the run never
asked must neither read as "0 % right" nor drag a mean of groups down.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def accuracy(records: Sequence[Mapping[str, Any]], drop_empty_responses: bool = False) -> float:
    """Micro accuracy (%). ``drop_empty_responses`` leaves out records whose raw reply is empty
    (lmms-eval MVBench's aggregation). No records -> 0.0, as upstream scripts report it."""
    if drop_empty_responses:
        records = [r for r in records if r["response"] != ""]
    if not records:
        return 0.0
    return 100.0 * sum(bool(r["correct"]) for r in records) / len(records)


def _groups(value: Any) -> Iterable[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def breakdown(records: Sequence[Mapping[str, Any]], field: str, order: Sequence[str] = (),
              drop_empty_responses: bool = False) -> dict[str, dict[str, float | None]]:
    """Per-group ``{"acc", "correct", "total"}`` for ``meta[field]``; groups in ``order`` first (even
    empty ones, so a missing task shows up as 0 of 0 with ``acc`` None), then the others sorted."""
    members: dict[str, list[Mapping[str, Any]]] = {name: [] for name in order}
    for record in records:
        for name in _groups(record["meta"][field]):
            members.setdefault(name, []).append(record)
    names = list(order) + sorted(set(members) - set(order))
    out = {}
    for name in names:
        group = members[name]
        kept = [r for r in group if r["response"] != ""] if drop_empty_responses else group
        out[name] = {"acc": accuracy(kept) if kept else None, "correct": sum(bool(r["correct"]) for r in kept),
                     "total": len(kept)}
    return out


def macro_mean(groups: Mapping[str, Mapping[str, float | None]]) -> float:
    """Unweighted mean of group accuracies (MLVU's M-Avg, MVBench's task mean) over the groups with answered
    questions; empty groups are left out (a run missing a whole task is flagged not comparable anyway)."""
    accs = [g["acc"] for g in groups.values() if g["acc"] is not None]
    if not accs:
        return 0.0
    return sum(accs) / len(accs)
