"""HourVideo dev set (docs/evaluation.md, "Benchmarks"). Not in lmms-eval, so only the VAMBA protocol exists.

Files: ``dev_v1.0_annotations.json``, a dict keyed by ``video_uid`` whose values hold
``benchmark_dataset`` (list of ``qid``, ``task``, ``question``, ``mcq_test`` = the pre-formatted A-E
option block, ``correct_answer_label``), and videos ``videos/<video_uid>.mp4``.
VAMBA samples its answers (temperature 1, top-p 0.9); ``seed`` makes that reproducible here.
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
    ProtocolSpec,
    Question,
    fields,
    gold_letter,
    nonempty,
    path_in,
    read_json,
    require_file,
)
from vamba.evaluation.interface import FrameSettings, GenerationSettings
from vamba.evaluation.metrics import accuracy, breakdown

CHOICES = ("A", "B", "C", "D", "E")


def load(root: Path, options: Mapping[str, Any]) -> list[Question]:
    annotation = require_file(path_in(root, options, "annotation", "dev_v1.0_annotations.json"),
                              "HourVideo annotation")
    video_dir = path_in(root, options, "video_dir", "videos")
    data = read_json(annotation)
    if not isinstance(data, dict):
        raise BenchmarkDataError(f"{annotation}: expected an object keyed by video_uid")
    questions = []
    for uid, content in data.items():
        fields(content, ("benchmark_dataset",), f"{annotation} [{uid}]")
        for j, mcq in enumerate(content["benchmark_dataset"]):
            where = f"{annotation} [{uid}].benchmark_dataset[{j}]"
            fields(mcq, ("qid", "task", "question", "mcq_test", "correct_answer_label"), where)
            questions.append(Question(
                qid=f"{uid}/{mcq['qid']}", video=str(video_dir / f"{uid}.mp4"), question=mcq["question"],
                options=(), answer=gold_letter(mcq["correct_answer_label"], 5, where), choices=CHOICES,
                meta={"task": mcq["task"], "task_family": str(mcq["task"]).split("/")[0],
                      "mcq_test": mcq["mcq_test"]}))
    return nonempty(questions, annotation)


def vamba_prompt(q: Question) -> str:
    return "\n".join([SELECT, q.question, q.meta["mcq_test"], RESPOND_ABCDE])


def metrics(records: Sequence[Mapping[str, Any]], drop_empty: bool = False) -> dict[str, Any]:
    return {"overall": accuracy(records, drop_empty),
            "by_task_family": breakdown(records, "task_family", (), drop_empty),
            "by_task": breakdown(records, "task", (), drop_empty)}


BENCHMARK = Benchmark(
    name="hourvideo", title="HourVideo", load=load, metrics=metrics,
    protocols={
        # vamba_hourvideo: this script compares only the first character of the upper-cased reply letter
        "vamba": ProtocolSpec(vamba_prompt, "vamba_hourvideo", FrameSettings(128, shortest_edge=256, longest_edge=360),
                              GenerationSettings(max_new_tokens=512, do_sample=True, temperature=1.0, top_p=0.9,
                                                 seed=0)),
    })
