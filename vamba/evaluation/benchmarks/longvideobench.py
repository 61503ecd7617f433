"""LongVideoBench validation set (reported: overall accuracy, no subtitles) (docs/evaluation.md, "Benchmarks").

Files: ``lvb_val.json`` (list of ``id``, ``video_path``, ``question``, ``candidates`` (4-5),
``correct_choice`` (index), ``duration_group``, ``question_category``, ``duration``, ...) and videos
``videos/<video_path>``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vamba.evaluation.benchmarks.base import (
    RESPOND_ABCD,
    SELECT,
    Benchmark,
    BenchmarkDataError,
    OfficialSet,
    ProtocolSpec,
    Question,
    fields,
    nonempty,
    option_lines,
    path_in,
    read_json,
    require_file,
)
from vamba.evaluation.extraction import letters
from vamba.evaluation.interface import FrameSettings, GenerationSettings
from vamba.evaluation.metrics import accuracy, breakdown

DURATION_GROUPS = ("15", "60", "600", "3600")  # 8-15 s, 15-60 s, 3-10 min, 15-60 min


def load(root: Path, options: Mapping[str, Any]) -> list[Question]:
    annotation = require_file(path_in(root, options, "annotation", "lvb_val.json"), "LongVideoBench annotation")
    video_dir = path_in(root, options, "video_dir", "videos")
    rows = read_json(annotation)
    if not isinstance(rows, list):
        raise BenchmarkDataError(f"{annotation}: expected a list of questions")
    questions = []
    for i, row in enumerate(rows):
        where = f"{annotation} [{i}]"
        fields(row, ("id", "video_path", "question", "candidates", "correct_choice", "duration_group",
                     "question_category"), where)
        candidates = tuple(str(c) for c in row["candidates"])
        choice = row["correct_choice"]
        if not isinstance(choice, int) or not 0 <= choice < len(candidates):
            raise BenchmarkDataError(f"{where}: correct_choice {choice!r} is not an index into {len(candidates)} candidates")
        questions.append(Question(
            qid=str(row["id"]), video=str(video_dir / row["video_path"]), question=row["question"],
            options=candidates, answer=chr(65 + choice), choices=letters(len(candidates)),
            meta={"duration_group": str(row["duration_group"]), "question_category": row["question_category"],
                  "duration": row.get("duration")}))
    return nonempty(questions, annotation)


def vamba_prompt(q: Question) -> str:
    # NOTE: VAMBA keeps "(A, B, C, or D)" even for five-option questions.
    return "\n".join([f"{SELECT} {RESPOND_ABCD}", q.question, *option_lines(q.options)])


def lmms_eval_prompt(q: Question) -> str:
    return "\n".join([q.question, *option_lines(q.options)]) + \
        "\nAnswer with the option's letter from the given choices directly.\n"


def metrics(records: Sequence[Mapping[str, Any]], drop_empty: bool = False) -> dict[str, Any]:
    return {"overall": accuracy(records, drop_empty),
            "by_duration_group": breakdown(records, "duration_group", DURATION_GROUPS, drop_empty),
            "by_question_category": breakdown(records, "question_category", (), drop_empty)}


_FRAMES = FrameSettings(512, shortest_edge=256, longest_edge=480)
BENCHMARK = Benchmark(
    name="longvideobench", title="LongVideoBench", load=load, metrics=metrics,
    official=OfficialSet(1337, None, "LongVideoBench paper (Wu et al. 2024, arXiv 2407.15754): validation split of "
                                     "1,337 of its 6,678 questions (not re-counted here)"),
    protocols={
        "vamba": ProtocolSpec(vamba_prompt, "vamba", _FRAMES),
        "lmms_eval": ProtocolSpec(lmms_eval_prompt, "longvideobench", _FRAMES, GenerationSettings(max_new_tokens=32)),
    })
