"""NExT-QA multiple-choice test set (docs/evaluation.md, "Benchmarks").

Files (HF ``lmms-lab/NExTQA`` layout): ``MC/test-00000-of-00001.parquet`` with ``video``, ``question``,
``a0``..``a4``, ``answer`` (index 0-4), ``type`` (and ``qid``), videos ``NExTVideo/<video>.mp4``.
VAMBA evaluates it at native resolution (no pre-resize).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vamba.evaluation.benchmarks.base import (
    RESPOND_ABCDE,
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
    read_parquet,
    require_file,
)
from vamba.evaluation.interface import FrameSettings, GenerationSettings
from vamba.evaluation.metrics import accuracy, breakdown

CHOICES = ("A", "B", "C", "D", "E")


def load(root: Path, options: Mapping[str, Any]) -> list[Question]:
    annotation = require_file(path_in(root, options, "annotation", "MC/test-00000-of-00001.parquet"),
                              "NExT-QA annotation")
    video_dir = path_in(root, options, "video_dir", "NExTVideo")
    questions = []
    for i, row in enumerate(read_parquet(annotation)):
        where = f"{annotation} row {i}"
        fields(row, ("video", "question", "a0", "a1", "a2", "a3", "a4", "answer", "type"), where)
        answer = row["answer"]
        if not isinstance(answer, int) or not 0 <= answer < 5:
            raise BenchmarkDataError(f"{where}: answer {answer!r} is not an option index 0-4")
        qid = f"{row['video']}/{row['qid']}" if "qid" in row else f"row{i}"
        questions.append(Question(
            qid=qid, video=str(video_dir / f"{row['video']}.mp4"), question=row["question"],
            options=tuple(str(row[f"a{k}"]) for k in range(5)), answer=CHOICES[answer], choices=CHOICES,
            meta={"type": row["type"]}))
    return nonempty(questions, annotation)


def vamba_prompt(q: Question) -> str:
    return "\n".join([f"{SELECT} {RESPOND_ABCDE}", q.question, *option_lines(q.options)])


def lmms_eval_prompt(q: Question) -> str:
    return "\n".join([q.question.strip(), *option_lines([o.strip() for o in q.options])])


def metrics(records: Sequence[Mapping[str, Any]], drop_empty: bool = False) -> dict[str, Any]:
    return {"overall": accuracy(records, drop_empty), "by_type": breakdown(records, "type", (), drop_empty)}


_FRAMES = FrameSettings(512, shortest_edge=None, longest_edge=None)
BENCHMARK = Benchmark(
    name="nextqa", title="NExT-QA", load=load, metrics=metrics,
    official=OfficialSet(8564, 1000, "NExT-QA (Xiao et al. 2021) multiple-choice test split as lmms-lab/NExTQA "
                                     "MC/test: 8,564 questions over 1,000 videos (not re-counted here)"),
    protocols={
        "vamba": ProtocolSpec(vamba_prompt, "vamba", _FRAMES),
        # lmms-eval's nextqa_mc_test sets no generation kwargs; 16 tokens is ample for a letter.
        "lmms_eval": ProtocolSpec(lmms_eval_prompt, "mmmu", _FRAMES, GenerationSettings(max_new_tokens=16)),
    })
