"""Turning replies into scored records, re-scoring recorded replies, and the run summary."""
from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from vamba.evaluation.benchmarks.base import Benchmark, Question
from vamba.evaluation.comparability import assess
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
              extra: Mapping[str, Any] | None = None, loaded_qids: Sequence[str] | None = None,
              loaded_videos: int | None = None) -> dict[str, Any]:
    """The summary JSON: headline score, every breakdown, how complete the run is and whether it is comparable.

    ``comparable`` is True only when the run used every setting of the published protocol and answered the whole
    official question set (``vamba.evaluation.comparability``); otherwise ``not_comparable`` lists why and
    ``comparability`` holds each differing setting (ours vs the protocol) and the question coverage.
    ``loaded_qids`` / ``loaded_videos``: the questions the run was asked to answer (default: the records').
    """
    metrics = benchmark.metrics(records, drop_empty)
    settings = (extra or {}).get("settings") or {}
    answered = [str(r["qid"]) for r in records]
    verdict = assess(benchmark, settings, list(loaded_qids) if loaded_qids is not None else answered,
                     loaded_videos if loaded_videos is not None else len({r["video"] for r in records}), answered)
    reasons = not_comparable_reasons(len(records), expected, skipped or {}) + verdict["not_comparable"]
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
        "comparability": {"differences": verdict["differences"], "questions": verdict["questions"]},
        "skipped": dict(skipped or {}),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **dict(extra or {}),
    }


def not_comparable_reasons(answered: int, expected: int, skipped: Mapping[str, Any]) -> list[str]:
    """The run's own incompleteness: questions it was asked but did not answer (skipped videos)."""
    if answered >= expected:
        return []
    why = f"{expected - answered} of {expected} questions not answered"
    if skipped.get("questions"):
        why += f" ({skipped['questions']} skipped: {skipped.get('videos', 0)} videos missing or undecodable)"
    return [why]
