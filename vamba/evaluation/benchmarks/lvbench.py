"""LVBench (THUDM; hour-long videos, reported on "test") (docs/evaluation.md, "Benchmarks").

Files: ``video_info.meta.jsonl`` (one line per video: ``key``, ``qa`` list of ``uid``, ``question`` with
the options embedded as "(A) ..." lines, ``answer``, ``question_type`` list, ``time_reference``) and
videos ``videos/<key>.mp4``. VAMBA's own flattened ``lvbench_processed.jsonl`` (one line per question:
``file_path``, ``question``, ``answer``, ``question_type``) is read too when passed as ``annotation``.
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
    OfficialSet,
    ProtocolSpec,
    Question,
    fields,
    gold_letter,
    nonempty,
    path_in,
    read_jsonl,
    require_file,
)
from vamba.evaluation.interface import FrameSettings
from vamba.evaluation.metrics import accuracy, breakdown

CATEGORIES = ("entity recognition", "event understanding", "key information retrieval", "temporal grounding",
              "reasoning", "summarization")
CHOICES = ("A", "B", "C", "D")


def _types(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise BenchmarkDataError(f"{where}: question_type must be a list of strings, got {value!r}")


def load(root: Path, options: Mapping[str, Any]) -> list[Question]:
    annotation = require_file(path_in(root, options, "annotation", "video_info.meta.jsonl"), "LVBench annotation")
    video_dir = path_in(root, options, "video_dir", "videos")
    rows = read_jsonl(annotation)
    questions: list[Question] = []
    for i, row in enumerate(rows, start=1):
        where = f"{annotation}:{i}"
        if isinstance(row, dict) and "qa" in row:  # official: one line per video
            fields(row, ("key", "qa"), where)
            for j, qa in enumerate(row["qa"]):
                at = f"{where} qa[{j}]"
                fields(qa, ("uid", "question", "answer", "question_type"), at)
                questions.append(Question(
                    qid=str(qa["uid"]), video=str(video_dir / f"{row['key']}.mp4"), question=qa["question"],
                    options=(), answer=gold_letter(qa["answer"], 4, at), choices=CHOICES,
                    meta={"question_type": _types(qa["question_type"], at),
                          "time_reference": qa.get("time_reference")}))
        else:  # VAMBA's flattened file: one line per question
            fields(row, ("file_path", "question", "answer", "question_type"), where)
            questions.append(Question(
                qid=str(row.get("uid", f"{row['file_path']}#{i}")), video=str(video_dir / row["file_path"]),
                question=row["question"], options=(), answer=gold_letter(row["answer"], 4, where), choices=CHOICES,
                meta={"question_type": _types(row["question_type"], where)}))
    return nonempty(questions, annotation)


def vamba_prompt(q: Question) -> str:
    return "\n".join([SELECT, RESPOND_ABCD, q.question])


def lmms_eval_prompt(q: Question) -> str:
    # lmms-eval's YAML post_prompt (no final period; its Python fallback has one).
    return q.question + "\nAnswer the question with the option letter"


def metrics(records: Sequence[Mapping[str, Any]], drop_empty: bool = False) -> dict[str, Any]:
    return {"overall": accuracy(records, drop_empty),
            "by_question_type": breakdown(records, "question_type", CATEGORIES, drop_empty)}


BENCHMARK = Benchmark(
    name="lvbench", title="LVBench", load=load, metrics=metrics,
    official=OfficialSet(1549, 103, "LVBench paper (Wang et al. 2024, arXiv 2406.08035), abstract and Sec. 3: 1,549 "
                                    "QA pairs over 103 videos"),
    protocols={
        "vamba": ProtocolSpec(vamba_prompt, "vamba", FrameSettings(1024, shortest_edge=256, longest_edge=560)),
        "lmms_eval": ProtocolSpec(lmms_eval_prompt, "mcq_extract", FrameSettings(1024, shortest_edge=256, longest_edge=560),
                                  LMMS_GENERATION, extractor_choices=CHOICES),
    })
