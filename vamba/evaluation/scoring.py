"""Turning replies into scored records, re-scoring recorded replies, and the run summary."""
from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from vamba.evaluation.benchmarks.base import Benchmark, Question
from vamba.evaluation.extraction import extract


def extraction_seed(seed: int, qid: str) -> str:
    """Per-question seed for random-fallback extractors: independent of order and sharding."""
    return f"{seed}:{qid}"


def make_record(q: Question, prompt: str, response: str, extractor: str, choices: Sequence[str],
                seed: int = 0) -> dict[str, Any]:
    """The JSONL record of one answered question; holds everything re-scoring needs."""
    pred = extract(extractor, response, choices, q.options, extraction_seed(seed, q.qid))
    return {"qid": q.qid, "video": q.video, "prompt": prompt, "response": response, "pred": pred, "gold": q.answer,
            "correct": pred == q.answer, "choices": "".join(choices), "options": list(q.options),
            "meta": {k: v for k, v in q.meta.items() if k not in ("subtitles", "mcq_test")}}


def rescore(records: Sequence[Mapping[str, Any]], extractor: str, seed: int = 0) -> list[dict[str, Any]]:
    """Records with ``pred``/``correct`` recomputed by ``extractor`` from the stored raw replies."""
    out = []
    for r in records:
        pred = extract(extractor, r["response"], tuple(r["choices"]), r["options"], extraction_seed(seed, r["qid"]))
        out.append({**r, "pred": pred, "correct": pred == r["gold"]})
    return out


def summarize(benchmark: Benchmark, records: Sequence[Mapping[str, Any]], *, protocol: str, extractor: str,
              drop_empty: bool, expected: int, skipped: Mapping[str, Any] | None = None,
              extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The summary JSON: headline score, every breakdown, and how complete the run is.

    ``comparable`` is False, with the reasons in ``not_comparable``, when the score is over fewer questions
    than the benchmark's: skipped (missing or undecodable) videos, or a ``limit`` in ``extra["settings"]``.
    """
    metrics = benchmark.metrics(records, drop_empty)
    reasons = not_comparable_reasons(len(records), expected, skipped or {}, (extra or {}).get("settings") or {})
    return {
        "benchmark": benchmark.name,
        "title": benchmark.title,
        "protocol": protocol,
        "extractor": extractor,
        "headline": benchmark.headline,
        "score": metrics[benchmark.headline],
        "metrics": metrics,
        "answered": len(records),
        "expected": expected,
        "complete": len(records) == expected,
        "comparable": not reasons,
        "not_comparable": reasons,
        "skipped": dict(skipped or {}),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **dict(extra or {}),
    }


def not_comparable_reasons(answered: int, expected: int, skipped: Mapping[str, Any],
                           settings: Mapping[str, Any]) -> list[str]:
    """Why a score cannot be set beside the published numbers (empty when it can, as far as counts go)."""
    reasons = []
    if answered < expected:
        why = f"{expected - answered} of {expected} questions not answered"
        if skipped.get("questions"):
            why += f" ({skipped['questions']} skipped: {skipped.get('videos', 0)} videos missing or undecodable)"
        reasons.append(why)
    if settings.get("limit") is not None:
        reasons.append(f"limit={settings['limit']}: only the first questions of the benchmark")
    return reasons
