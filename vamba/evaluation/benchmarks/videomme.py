"""Video-MME (reported: overall accuracy without subtitles) (docs/evaluation.md, "Benchmarks").

Files (HF ``lmms-lab/Video-MME`` layout): ``videomme/test-00000-of-00001.parquet`` with ``videoID``,
``question_id``, ``duration`` (short/medium/long), ``domain``, ``sub_category``, ``task_type``,
``question``, ``options`` (four strings already starting "A. "), ``answer``; videos ``data/<videoID>.mp4``;
subtitles ``subtitle/<videoID>.srt`` (loaded with ``subtitles=true``; VAMBA never used them).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vamba.evaluation.benchmarks.base import (
    LMMS_GENERATION,
    RESPOND_ABCD,
    SELECT,
    Benchmark,
    BenchmarkDataError,
    OfficialSet,
    ProtocolSpec,
    Question,
    fields,
    gold_letter,
    nonempty,
    path_in,
    read_parquet,
    require_file,
)
from vamba.evaluation.interface import FrameSettings
from vamba.evaluation.metrics import accuracy, breakdown
from vamba.utils.paths import is_inside

DURATIONS = ("short", "medium", "long")
CHOICES = ("A", "B", "C", "D")
VIDEO_SUFFIXES = (".mp4", ".MP4", ".mkv")  # lmms-eval tries these in order
_TAG = re.compile(r"<[^>]+>")


def read_srt(path: Path) -> str:
    """Subtitle text of an .srt file, one cue per line, markup (``<font ...>``) removed."""
    lines = []
    for block in path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n").split("\n\n"):
        parts = block.strip().split("\n")
        if len(parts) >= 3 and "-->" in parts[1]:
            lines.append(_TAG.sub("", " ".join(parts[2:])).strip())
    return "\n".join(line for line in lines if line)


def _video_path(video_dir: Path, video_id: str) -> Path:
    candidates = [video_dir / f"{video_id}{suffix}" for suffix in VIDEO_SUFFIXES]
    return next((p for p in candidates if p.exists()), candidates[0])


def load(root: Path, options: Mapping[str, Any]) -> list[Question]:
    annotation = require_file(path_in(root, options, "annotation", "videomme/test-00000-of-00001.parquet"),
                              "Video-MME annotation")
    video_dir = path_in(root, options, "video_dir", "data")
    subtitle_dir = root / "subtitle"
    with_subtitles = bool(options.get("subtitles", False))
    questions = []
    for i, row in enumerate(read_parquet(annotation)):
        where = f"{annotation} row {i}"
        fields(row, ("videoID", "question_id", "duration", "domain", "sub_category", "task_type", "question",
                     "options", "answer"), where)
        meta = {k: row[k] for k in ("duration", "domain", "sub_category", "task_type")}
        if with_subtitles:
            srt = subtitle_dir / f"{row['videoID']}.srt"
            if not is_inside(srt, subtitle_dir):  # read at load time, before the runner's check of video paths
                raise BenchmarkDataError(f"{where}: videoID {row['videoID']!r} names a subtitle file outside "
                                         f"{subtitle_dir}")
            meta["subtitles"] = read_srt(srt) if srt.exists() else ""
        opts = tuple(str(o) for o in row["options"])
        questions.append(Question(qid=str(row["question_id"]), video=str(_video_path(video_dir, row["videoID"])),
                                  question=row["question"], options=opts,
                                  answer=gold_letter(row["answer"], len(opts), where), choices=CHOICES, meta=meta))
    return nonempty(questions, annotation)


def vamba_prompt(q: Question) -> str:
    # NOTE: VAMBA puts all four options on ONE line, separated by single spaces.
    text = "\n".join([SELECT, RESPOND_ABCD, q.question, " ".join(q.options)])
    if "subtitles" in q.meta:  # not part of the released protocol: the official Video-MME subtitle header
        text = "This video's subtitles are listed below:\n" + q.meta["subtitles"] + "\n" + text
    return text


_LMMS_INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video and the "
                     "subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")


def lmms_eval_prompt(q: Question) -> str:
    block = _LMMS_INSTRUCTION + "\n" + q.question + "\n" + "\n".join(q.options) + "\n"
    if "subtitles" in q.meta:  # videomme_w_subtitle
        subs = q.meta["subtitles"] or "No subtitles available"
        return "This video's subtitles are listed below: \n" + subs + "\n" + block + "The best answer is:"
    return block + "\nAnswer with the option's letter from the given choices directly."


def metrics(records: Sequence[Mapping[str, Any]], drop_empty: bool = False) -> dict[str, Any]:
    return {"overall": accuracy(records, drop_empty),
            "by_duration": breakdown(records, "duration", DURATIONS, drop_empty),
            "by_task_type": breakdown(records, "task_type", (), drop_empty),
            "by_domain": breakdown(records, "domain", (), drop_empty)}


_FRAMES = FrameSettings(512, shortest_edge=256, longest_edge=480)
BENCHMARK = Benchmark(
    name="videomme", title="Video-MME", load=load, metrics=metrics,
    official=OfficialSet(2700, 900, "Video-MME paper (Fu et al. 2024, arXiv 2405.21075), abstract: 900 videos, "
                                    "2,700 QA pairs (3 per video)"),
    protocols={
        "vamba": ProtocolSpec(vamba_prompt, "vamba", _FRAMES),
        "lmms_eval": ProtocolSpec(lmms_eval_prompt, "mcq_extract", _FRAMES, LMMS_GENERATION, extractor_choices=CHOICES),
    })
