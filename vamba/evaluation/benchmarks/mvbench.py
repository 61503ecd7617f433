"""MVBench (20 tasks x 200 questions; reported: mean task accuracy) (docs/evaluation.md, "Benchmarks").

Files (HF ``OpenGVLab/MVBench``): ``json/<task>.json`` (lists of ``video``, ``question``, ``candidates``,
``answer`` = the right candidate's text, and ``start``/``end`` seconds for bounded tasks) and media
under ``video/<source prefix>/``. Episodic Reasoning uses TVQA frame folders (``00001.jpg``..., 3 fps).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from vamba.evaluation.benchmarks.base import (
    LMMS_GENERATION,
    Benchmark,
    BenchmarkDataError,
    OfficialSet,
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


class Task(NamedTuple):
    title: str
    file: str
    prefix: str
    frame_folder: bool
    bounded: bool


TASKS = (
    Task("Action Sequence", "action_sequence.json", "star/Charades_v1_480/", False, True),
    Task("Action Prediction", "action_prediction.json", "star/Charades_v1_480/", False, True),
    Task("Action Antonym", "action_antonym.json", "ssv2_video/", False, False),
    Task("Fine-grained Action", "fine_grained_action.json", "Moments_in_Time_Raw/videos/", False, False),
    Task("Unexpected Action", "unexpected_action.json", "FunQA_test/test/", False, False),
    Task("Object Existence", "object_existence.json", "clevrer/video_validation/", False, False),
    Task("Object Interaction", "object_interaction.json", "star/Charades_v1_480/", False, True),
    Task("Object Shuffle", "object_shuffle.json", "perception/videos/", False, False),
    Task("Moving Direction", "moving_direction.json", "clevrer/video_validation/", False, False),
    Task("Action Localization", "action_localization.json", "sta/sta_video/", False, True),
    Task("Scene Transition", "scene_transition.json", "scene_qa/video/", False, False),
    Task("Action Count", "action_count.json", "perception/videos/", False, False),
    Task("Moving Count", "moving_count.json", "clevrer/video_validation/", False, False),
    Task("Moving Attribute", "moving_attribute.json", "clevrer/video_validation/", False, False),
    Task("State Change", "state_change.json", "perception/videos/", False, False),
    Task("Fine-grained Pose", "fine_grained_pose.json", "nturgbd/", False, False),
    Task("Character Order", "character_order.json", "perception/videos/", False, False),
    Task("Egocentric Navigation", "egocentric_navigation.json", "vlnqa/", False, False),
    Task("Episodic Reasoning", "episodic_reasoning.json", "tvqa/frames_fps3_hq/", True, True),
    Task("Counterfactual Inference", "counterfactual_inference.json", "clevrer/video_validation/", False, False),
)
TASK_TITLES = tuple(t.title for t in TASKS)
FRAME_FOLDER_FPS = 3.0


def load(root: Path, options: Mapping[str, Any]) -> list[Question]:
    json_dir = path_in(root, options, "annotation", "json")
    video_dir = path_in(root, options, "video_dir", "video")
    questions = []
    for task in TASKS:
        path = require_file(json_dir / task.file, f"MVBench {task.title} annotation")
        rows = read_json(path)
        if not isinstance(rows, list):
            raise BenchmarkDataError(f"{path}: expected a list of questions")
        if not rows:
            raise BenchmarkDataError(f"{path}: no questions (empty annotation file)")
        for i, row in enumerate(rows):
            where = f"{path} [{i}]"
            fields(row, ("video", "question", "candidates", "answer") + (("start", "end") if task.bounded else ()),
                   where)
            candidates = tuple(str(c) for c in row["candidates"])
            if row["answer"] not in candidates:
                raise BenchmarkDataError(f"{where}: answer {row['answer']!r} is not one of the candidates")
            # The official template keeps the LAST candidate equal to the answer.
            gold = max(j for j, c in enumerate(candidates) if c == row["answer"])
            questions.append(Question(
                qid=f"{task.file.removesuffix('.json')}/{i}", video=str(video_dir / task.prefix / row["video"]),
                question=row["question"], options=candidates, answer=chr(65 + gold), choices=letters(len(candidates)),
                meta={"task": task.title},
                start=float(row["start"]) if task.bounded else None, end=float(row["end"]) if task.bounded else None,
                is_frame_folder=task.frame_folder, frame_folder_fps=FRAME_FOLDER_FPS if task.frame_folder else None,
                first_frame_index=1 if task.frame_folder else 0))
    return questions


def vamba_prompt(q: Question) -> str:
    lines = [f"Question: {q.question}", *option_lines(q.options),
             "Answer with the option's letter from the given choices directly."]
    return "\n".join(lines).rstrip()


def lmms_eval_prompt(q: Question) -> str:
    options = "".join(f"{line}\n" for line in option_lines(q.options, "({letter}) {text}"))
    return "Question:" + q.question + "\nOption:\n" + options + "Only give the best option.\n"


def metrics(records: Sequence[Mapping[str, Any]], drop_empty: bool = False) -> dict[str, Any]:
    by_task = breakdown(records, "task", TASK_TITLES, drop_empty)
    return {"task_mean": macro_mean(by_task), "overall": accuracy(records, drop_empty), "by_task": by_task}


_FRAMES = FrameSettings(512, sampling="mvbench_segments", shortest_edge=256, longest_edge=480)
# VAMBA resizes mp4 sources only; TVQA frame folders keep their native size.
_NATIVE = FrameSettings(512, sampling="mvbench_segments", shortest_edge=None, longest_edge=None)
BENCHMARK = Benchmark(
    name="mvbench", title="MVBench", load=load, metrics=metrics, headline="task_mean",
    official=OfficialSet(4000, None, "MVBench paper (Li et al. 2024, arXiv 2311.17005): 20 tasks x 200 questions"),
    protocols={
        "vamba": ProtocolSpec(vamba_prompt, "vamba", _FRAMES, frame_folder_frames=_NATIVE),
        "lmms_eval": ProtocolSpec(lmms_eval_prompt, "mvbench", _FRAMES, LMMS_GENERATION, drop_empty_responses=True,
                                  frame_folder_frames=_NATIVE),
    })
