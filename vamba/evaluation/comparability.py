"""Can a run's score be set beside the published numbers? Only when it ran the published protocol on the whole
official question set.

The published VAMBA numbers (``vamba.evaluation.published``) were made with the released evaluation, which is the
benchmark's ``vamba`` protocol here. A run is comparable when

- every protocol setting it recorded in ``run.json`` equals that protocol's: prompt (the protocol's name, and no
  Video-MME subtitles), answer extractor, frames (count, sampling, pre-resize edges, also for frame folders),
  decoding (max new tokens, greedy or sampled with its temperature / top-p / top-k), pixel limits (the checkpoint's
  own processor files: no ``model.min_pixels`` / ``model.max_pixels`` override), no FP8 layers (``model.fp8``) and
  no ``limit``;
- it loaded exactly the official number of questions (and videos, where the benchmark module records that number:
  ``Benchmark.official``, with its source), and answered every loaded question id.

``assess`` returns every difference, so the report can say what to change, not only that something differs.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from vamba.evaluation.benchmarks.base import Benchmark

PUBLISHED_PROTOCOL = "vamba"
# The sampling seed is not a protocol setting: the released HourVideo run samples, unseeded.
_IGNORED_GENERATION = ("seed",)


def protocol_settings(benchmark: Benchmark) -> dict[str, Any]:
    """The settings the published numbers were made with, flattened (``frames.num_frames``: 1024, ...)."""
    spec = benchmark.protocol(PUBLISHED_PROTOCOL)
    flat: dict[str, Any] = {"protocol (prompt)": PUBLISHED_PROTOCOL, "extractor": spec.extractor,
                            "subtitles": False, "model.min_pixels": None, "model.max_pixels": None, "model.fp8": "none"}
    for key, value in dataclasses.asdict(spec.frames).items():
        flat[f"frames.{key}"] = value
    if spec.frame_folder_frames is not None:
        for key, value in dataclasses.asdict(spec.frame_folder_frames).items():
            flat[f"frame_folder_frames.{key}"] = value
    for key, value in dataclasses.asdict(spec.generation).items():
        if key not in _IGNORED_GENERATION:
            flat[f"generation.{key}"] = value
    flat["limit"] = None
    return flat


def run_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A run's ``run.json`` flattened like ``protocol_settings`` (a key the run did not record reads ``None``)."""
    flat: dict[str, Any] = {"protocol (prompt)": settings.get("protocol"), "extractor": settings.get("extractor"),
                            "subtitles": bool(settings.get("subtitles") or False),
                            "model.min_pixels": settings.get("min_pixels"),
                            "model.max_pixels": settings.get("max_pixels"), "limit": settings.get("limit"),
                            # runs recorded before model.fp8 existed ran without FP8
                            "model.fp8": settings.get("fp8", "none")}
    for group in ("frames", "frame_folder_frames", "generation"):
        for key, value in (settings.get(group) or {}).items():
            flat[f"{group}.{key}"] = value
    return flat


def setting_differences(benchmark: Benchmark, settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``{"setting", "ours", "protocol"}`` for every protocol setting the run does not share with the published
    protocol. A setting the run did not record counts as different (we cannot show it was the same)."""
    ours = run_settings(settings)
    reference = protocol_settings(benchmark)
    missing = object()
    out = []
    for key, want in reference.items():
        have = ours.get(key, missing)
        if have is missing or have != want:
            out.append({"setting": key, "ours": "not recorded" if have is missing else have, "protocol": want})
    return out


def question_coverage(benchmark: Benchmark, loaded_qids: Sequence[str], loaded_videos: int,
                      answered_qids: Sequence[str]) -> dict[str, Any]:
    """How the answered questions cover the official set: ``answered`` of ``official`` (the published set's size),
    the ``loaded`` questions and videos, and ``missing`` (loaded question ids never answered)."""
    official = benchmark.official
    loaded = set(loaded_qids)
    return {"official": official.questions if official else None,
            "official_videos": official.videos if official else None,
            "source": official.source if official else None,
            "loaded": len(loaded), "loaded_videos": loaded_videos,
            "answered": len(loaded & set(answered_qids)), "missing": len(loaded - set(answered_qids))}


def reasons(benchmark: Benchmark, differences: Sequence[Mapping[str, Any]], coverage: Mapping[str, Any]) -> list[str]:
    """One line per reason the run is not comparable (empty: comparable)."""
    out = []
    official, videos = coverage["official"], coverage["official_videos"]
    if official is None:
        out.append(f"the official {benchmark.title} question count is not recorded here, so the question set "
                   "cannot be checked")
    elif coverage["loaded"] != official or coverage["missing"]:
        why = f"questions: {coverage['answered']} of the official {official} answered"
        if coverage["loaded"] != official:
            why += f" ({coverage['loaded']} loaded)"
        if coverage["missing"]:
            why += f"; {coverage['missing']} loaded question ids not answered"
        out.append(why)
    if official is not None and videos is not None and coverage["loaded_videos"] != videos:
        out.append(f"videos: {coverage['loaded_videos']} loaded, the official set has {videos}")
    out += [f"{d['setting']}: {d['ours']!r} (protocol: {d['protocol']!r})" for d in differences]
    return out


def assess(benchmark: Benchmark, settings: Mapping[str, Any], loaded_qids: Sequence[str], loaded_videos: int,
           answered_qids: Sequence[str]) -> dict[str, Any]:
    """``{"comparable", "not_comparable" (reasons), "differences", "questions"}`` of one run."""
    differences = setting_differences(benchmark, settings)
    coverage = question_coverage(benchmark, loaded_qids, loaded_videos, answered_qids)
    why = reasons(benchmark, differences, coverage)
    return {"comparable": not why, "not_comparable": why, "differences": differences, "questions": coverage}


__all__ = ["PUBLISHED_PROTOCOL", "assess", "protocol_settings", "question_coverage", "reasons", "run_settings",
           "setting_differences"]
