"""What every benchmark module provides: a loader for the official files, per-protocol prompts and
settings, and its published metrics. Benchmarks are data (a ``Benchmark`` value), not subclasses."""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vamba.evaluation.interface import FrameSettings, GenerationSettings, VideoRequest


class BenchmarkDataError(ValueError):
    """An annotation file is missing or does not have the official format."""


@dataclass(frozen=True)
class Question:
    """One multiple-choice question, loaded verbatim from the official annotation.

    :param qid: unique id within the benchmark (the official id field where one exists).
    :param video: resolved path of its video file (or frame folder); may not exist on disk.
    :param question: question text as released (LVBench embeds its options in it).
    :param options: option texts as released (Video-MME's already start with "A. ").
    :param answer: gold option letter.
    :param meta: breakdown fields (verbatim names, e.g. ``duration``, ``question_type``) and any
        field a prompt needs (``subtitles``).
    :param choices: valid option letters (A-D for LVBench, whose options live in the question text;
        A-E for HourVideo's pre-formatted block).
    :param start, end: temporal bounds in seconds (MVBench).
    """

    qid: str
    video: str
    question: str
    options: tuple[str, ...]
    answer: str
    choices: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    start: float | None = None
    end: float | None = None
    is_frame_folder: bool = False
    frame_folder_fps: float | None = None
    first_frame_index: int = 0


@dataclass(frozen=True)
class ProtocolSpec:
    """Everything one evaluation protocol fixes for a benchmark.

    :param prompt: question -> user-turn text.
    :param extractor: name in ``vamba.evaluation.extraction.EXTRACTORS``.
    :param extractor_choices: letters the extractor may return when the protocol fixes them
        (lmms-eval's Video-MME/MLVU/LVBench rules always use A-D); ``None`` = the question's choices.
    :param drop_empty_responses: leave empty replies out of the denominator (lmms-eval MVBench).
    """

    prompt: Callable[[Question], str]
    extractor: str
    frames: FrameSettings
    generation: GenerationSettings = GenerationSettings()
    extractor_choices: tuple[str, ...] | None = None
    drop_empty_responses: bool = False
    # frame settings for frame-folder sources when they differ (VAMBA keeps TVQA frames at native size)
    frame_folder_frames: FrameSettings | None = None

    def video_request(self, q: Question) -> VideoRequest:
        frames = self.frame_folder_frames if (q.is_frame_folder and self.frame_folder_frames) else self.frames
        return VideoRequest(path=q.video, frames=frames, start=q.start, end=q.end, is_frame_folder=q.is_frame_folder,
                            frame_folder_fps=q.frame_folder_fps, first_frame_index=q.first_frame_index)


@dataclass(frozen=True)
class OfficialSet:
    """The size of the question set the published numbers were computed on, with where that number comes from.

    A run is comparable with the published numbers only when it loaded and answered exactly this many questions
    (and, where recorded, over this many videos); ``vamba.evaluation.comparability`` checks it.
    """

    questions: int
    videos: int | None
    source: str


@dataclass(frozen=True)
class Benchmark:
    """A benchmark: how to load it, how each protocol asks, how it is scored.

    :param load: ``(root, options) -> questions``; ``options`` may hold ``annotation`` (file or folder
        override), ``video_dir`` and, for Video-MME, ``subtitles``.
    :param metrics: records -> ``{"overall": ..., "<breakdown>": {...}, ...}`` (percentages).
    :param headline: the key of ``metrics`` that the paper reports (``overall``, ``m_avg``, ``task_mean``).
    :param official: size of the official question set behind the published numbers; ``None`` = not recorded
        here, so no run of it can be called comparable.
    """

    name: str
    title: str
    load: Callable[[Path, Mapping[str, Any]], list[Question]]
    protocols: Mapping[str, ProtocolSpec]
    metrics: Callable[[Sequence[Mapping[str, Any]], bool], dict[str, Any]]
    headline: str = "overall"
    official: OfficialSet | None = None

    def protocol(self, name: str) -> ProtocolSpec:
        if name not in self.protocols:
            raise ValueError(f"{self.name}: unknown protocol {name!r}; choose one of {sorted(self.protocols)}")
        return self.protocols[name]


# ---- helpers shared by the loaders -------------------------------------------------------------------


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise BenchmarkDataError(f"{what} not found: {path}")
    return path


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BenchmarkDataError(f"{path}: not valid JSON ({e})") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Strict JSONL reader for annotations (a bad line is an error, not a torn write)."""
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise BenchmarkDataError(f"{path}:{i}: not valid JSON ({e})") from None
    return rows


def read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise BenchmarkDataError(f"{path}: cannot read parquet ({e})") from None


def fields(record: Any, names: Sequence[str], where: str) -> None:
    """Fail with the file/record location when an official field is missing."""
    if not isinstance(record, dict):
        raise BenchmarkDataError(f"{where}: expected an object, got {type(record).__name__}")
    missing = [n for n in names if n not in record]
    if missing:
        raise BenchmarkDataError(f"{where}: missing field(s) {missing} (have {sorted(record)})")


def gold_letter(answer: Any, n_options: int, where: str) -> str:
    """Validate a gold letter (A.. for ``n_options``), verbatim: the released scripts compare the label as
    released, so " B" or "b" could never be scored right there; here they are an error."""
    letter = str(answer)
    if len(letter) != 1 or not ("A" <= letter < chr(ord("A") + max(n_options, 1))):
        raise BenchmarkDataError(f"{where}: answer {answer!r} is not one of the {n_options} option letters")
    return letter


def nonempty(questions: list[Question], source: Path) -> list[Question]:
    """``questions`` read from ``source``; none at all is an error naming the file (a truncated download
    would otherwise score 0 of 0, or drag a task mean down with an empty task)."""
    if not questions:
        raise BenchmarkDataError(f"{source}: no questions (empty annotation file)")
    return questions


# Instruction lines of the released VAMBA prompts (its eval/eval_*.py scripts), verbatim.
SELECT = "Select the best answer to the following multiple-choice question based on the video."
RESPOND_ABCD = "Respond with only the letter (A, B, C, or D) of the correct option."
RESPOND_ABCDE = "Respond with only the letter (A, B, C, D, or E) of the correct option."
LMMS_GENERATION = GenerationSettings(max_new_tokens=16)  # lmms-eval video MCQ tasks: greedy, 16 tokens


def option_lines(options: Sequence[str], template: str = "{letter}. {text}") -> list[str]:
    return [template.format(letter=chr(65 + i), text=text) for i, text in enumerate(options)]


def path_in(root: Path, options: Mapping[str, Any], key: str, default: str) -> Path:
    """``options[key]`` if given (absolute, or relative to ``root``), else ``root / default``."""
    value = options.get(key)
    return root / default if value in (None, "") else root / Path(value)
