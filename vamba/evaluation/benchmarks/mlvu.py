"""MLVU multiple-choice dev set (reported: M-Avg) (docs/evaluation.md, "Benchmarks").

Files: ``json/<task>.json`` for the seven MC tasks (lists of ``video``, ``duration``, ``question``,
``candidates``, ``answer`` = the text of the right candidate, ``question_type``) and videos
``video/<task>/<video>``. M-Avg is the unweighted mean of the seven task accuracies (the MLVU
leaderboard's column; VAMBA's script printed only per-type and micro accuracies).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vamba.evaluation.benchmarks.base import (
    LMMS_GENERATION,
    RESPOND_ABCD,
    SELECT,
    Benchmark,
    BenchmarkDataError,
    ProtocolSpec,
    Question,
    fields,
    option_lines,
    path_in,
    read_json,
    require_file,
)
from vamba.evaluation.extraction import letters
from vamba.evaluation.interface import FrameSettings
from vamba.evaluation.metrics import accuracy, breakdown, macro_mean

TASKS = ("1_plotQA", "2_needle", "3_ego", "4_count", "5_order", "6_anomaly_reco", "7_topic_reasoning")


def load(root: Path, options: Mapping[str, Any]) -> list[Question]:
    json_dir = path_in(root, options, "annotation", "json")
    video_dir = path_in(root, options, "video_dir", "video")
    questions = []
    # VAMBA groups by video file name and finds the file under the folder of the first task that uses it.
    first_task: dict[str, str] = {}
    for task in TASKS:
        path = require_file(json_dir / f"{task}.json", f"MLVU {task} annotation")
        rows = read_json(path)
        if not isinstance(rows, list):
            raise BenchmarkDataError(f"{path}: expected a list of questions")
        if not rows:
            raise BenchmarkDataError(f"{path}: no questions (empty annotation file)")
        for i, row in enumerate(rows):
            where = f"{path} [{i}]"
            fields(row, ("video", "question", "candidates", "answer", "question_type"), where)
            candidates = tuple(str(c) for c in row["candidates"])
            if row["answer"] not in candidates:
                raise BenchmarkDataError(f"{where}: answer {row['answer']!r} is not one of the candidates")
            first_task.setdefault(row["video"], task)
            questions.append(Question(
                qid=f"{task}/{i}", video=str(video_dir / first_task[row["video"]] / row["video"]),
                question=row["question"], options=candidates, answer=chr(65 + candidates.index(row["answer"])),
                choices=letters(len(candidates)),
                meta={"task": task, "question_type": row["question_type"], "duration": row.get("duration")}))
    return questions


def vamba_prompt(q: Question) -> str:
    return "\n".join([f"{SELECT} {RESPOND_ABCD}", q.question, *option_lines(q.options)])


def lmms_eval_prompt(q: Question) -> str:
    # lmms-eval reads HF sy1998/MLVU_dev, whose question text already carries the options; the "(A) ..."
    # layout used here to embed them is inferred, not verified against that file.
    question = "\n".join([q.question, *option_lines(q.options, "({letter}) {text}")])
    return question + "\nOnly give the best option.\nBest option: ("


def metrics(records: Sequence[Mapping[str, Any]], drop_empty: bool = False) -> dict[str, Any]:
    by_task = breakdown(records, "task", TASKS, drop_empty)
    return {"m_avg": macro_mean(by_task), "overall": accuracy(records, drop_empty), "by_task": by_task,
            "by_question_type": breakdown(records, "question_type", (), drop_empty)}


_FRAMES = FrameSettings(512, shortest_edge=256, longest_edge=480)
BENCHMARK = Benchmark(
    name="mlvu", title="MLVU", load=load, metrics=metrics, headline="m_avg",
    protocols={
        "vamba": ProtocolSpec(vamba_prompt, "vamba", _FRAMES),
        "lmms_eval": ProtocolSpec(lmms_eval_prompt, "mcq_extract", _FRAMES, LMMS_GENERATION,
                                  extractor_choices=("A", "B", "C", "D")),
    })
