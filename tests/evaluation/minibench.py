"""Mini benchmarks written in each benchmark's exact official file format (invented content).

Every writer returns the benchmark root; the facts the tests check (ids, gold letters, categories) are
spelled out here so the expected values in the tests can be computed by hand.
"""
from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vamba.data.video import VideoDecodeError
from vamba.evaluation.interface import GenerationSettings, VideoRequest
from vamba.evaluation.replay import ReplayModel


def write_mp4(path: Path, frames: int = 4, size: int = 32) -> Path:
    """A real, tiny H.264 file (the harness only checks it exists; adapters decode it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.full((size, size, 3), 40 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


LV_Q1 = "What colour is the car that appears first?\n(A) Red\n(B) Blue\n(C) Black\n(D) White"
LV_Q2 = "Why does the man leave?\n(A) He is late\n(B) It rains\n(C) He is bored\n(D) A call"
LV_Q3 = "What is the video about?\n(A) Cooking\n(B) Travel\n(C) Sports\n(D) Music"


def write_lvbench(root: Path, with_videos: bool = True) -> Path:
    rows = [
        {"key": "vidA", "type": "cartoon", "qa": [
            {"uid": 1, "question": LV_Q1, "answer": "C", "question_type": ["entity recognition"],
             "time_reference": "00:01-00:05"},
            {"uid": 2, "question": LV_Q2, "answer": "A", "question_type": ["reasoning", "temporal grounding"],
             "time_reference": "00:10-00:20"}]},
        {"key": "vidB", "type": "documentary", "qa": [
            {"uid": 3, "question": LV_Q3, "answer": "B", "question_type": ["entity recognition", "summarization"],
             "time_reference": ""}]},
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "video_info.meta.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if with_videos:
        for key in ("vidA", "vidB"):
            write_mp4(root / "videos" / f"{key}.mp4")
    return root


def write_videomme(root: Path) -> Path:
    def row(vid, qid, duration, task, answer, question="How many planets are shown?"):
        return {"video_id": vid[-3:], "duration": duration, "domain": "Knowledge", "sub_category": "Astronomy",
                "url": f"https://example.invalid/{vid}", "videoID": vid, "question_id": qid, "task_type": task,
                "question": question, "options": ["A. 3.", "B. 5.", "C. 8.", "D. 9."], "answer": answer}
    rows = [row("vidShort001", "001-1", "short", "Counting Problem", "C"),
            row("vidShort001", "001-2", "short", "Object Recognition", "A", "Which planet is red?"),
            row("vidMedium02", "002-1", "medium", "Counting Problem", "B"),
            row("vidLong0003", "003-1", "long", "Temporal Reasoning", "D")]
    _parquet(root / "videomme" / "test-00000-of-00001.parquet", rows)
    for vid in ("vidShort001", "vidMedium02", "vidLong0003"):
        write_mp4(root / "data" / f"{vid}.mp4")
    (root / "subtitle").mkdir(parents=True, exist_ok=True)
    (root / "subtitle" / "vidShort001.srt").write_text(
        "1\n00:00:00,000 --> 00:00:01,500\n<font color=\"white\" size=\".72c\">Look at the sky.</font>\n\n"
        "2\n00:00:01,500 --> 00:00:03,000\n<font color=\"white\" size=\".72c\">Count them.</font>\n")
    return root


MLVU_TASKS = ("1_plotQA", "2_needle", "3_ego", "4_count", "5_order", "6_anomaly_reco", "7_topic_reasoning")


def write_mlvu(root: Path) -> Path:
    # plotQA has two questions on one movie; every other task one question; 2_needle reuses the movie.
    for task in MLVU_TASKS:
        qtype = task.split("_", 1)[1]
        rows = [{"video": f"{qtype}_1.mp4", "duration": 300, "question": f"Q about {qtype}?",
                 "candidates": ["A ball", "A hat", "A book", "A cup"], "answer": "A book", "question_type": qtype}]
        if task == "1_plotQA":
            rows.append({"video": "plotQA_1.mp4", "duration": 300, "question": "What does the boy pick up?",
                         "candidates": ["A ball", "A hat", "A cup", "A book"], "answer": "A ball",
                         "question_type": "plotQA"})
        if task == "2_needle":
            rows.append({"video": "plotQA_1.mp4", "duration": 300, "question": "Which object is inserted?",
                         "candidates": ["A car", "A tree"], "answer": "A tree", "question_type": "findNeedle"})
        _json(root / "json" / f"{task}.json", rows)
        write_mp4(root / "video" / task / f"{qtype}_1.mp4")
    return root


def write_longvideobench(root: Path) -> Path:
    rows = [
        {"id": "q_001", "video_id": "AbC-1", "video_path": "AbC-1.mp4", "subtitle_path": "AbC-1_en.json",
         "question": "When the man says 'let's go', what is on the table?",
         "candidates": ["a cup", "a laptop", "a plant", "a book"], "correct_choice": 1, "duration": 12.0,
         "duration_group": 15, "question_category": "S2O", "starting_timestamp_for_subtitles": 0.0},
        {"id": "q_002", "video_id": "AbC-1", "video_path": "AbC-1.mp4", "subtitle_path": "AbC-1_en.json",
         "question": "What happens after the door opens?",
         "candidates": ["rain", "a dog runs", "lights off", "music", "nothing"], "correct_choice": 4,
         "duration": 12.0, "duration_group": 15, "question_category": "E3E", "starting_timestamp_for_subtitles": 0.0},
        {"id": "q_003", "video_id": "XyZ-2", "video_path": "XyZ-2.mp4", "subtitle_path": "XyZ-2_en.json",
         "question": "What colour is the coat?", "candidates": ["red", "green", "blue", "black"],
         "correct_choice": 0, "duration": 412.5, "duration_group": 600, "question_category": "S2A",
         "starting_timestamp_for_subtitles": 0.0},
    ]
    _json(root / "lvb_val.json", rows)
    for name in ("AbC-1.mp4", "XyZ-2.mp4"):
        write_mp4(root / "videos" / name)
    return root


MVBENCH_FILES = ("action_sequence", "action_prediction", "action_antonym", "fine_grained_action",
                 "unexpected_action", "object_existence", "object_interaction", "object_shuffle", "moving_direction",
                 "action_localization", "scene_transition", "action_count", "moving_count", "moving_attribute",
                 "state_change", "fine_grained_pose", "character_order", "egocentric_navigation",
                 "episodic_reasoning", "counterfactual_inference")
MVBENCH_BOUNDED = {"action_sequence", "action_prediction", "object_interaction", "action_localization",
                   "episodic_reasoning"}


def write_mvbench(root: Path) -> Path:
    """One question per task; action_sequence has two, on the same clip with different bounds."""
    from vamba.evaluation.benchmarks.mvbench import TASKS

    for task in TASKS:
        stem = task.file.removesuffix(".json")
        row = {"video": f"{stem}_clip.mp4", "question": f"What happens in {stem}?",
               "candidates": ["Opened the door.", "Sat on the bed.", "Took the book."], "answer": "Sat on the bed."}
        if stem == "episodic_reasoning":
            row["video"] = "s01e01_seg01"
            folder = root / "video" / task.prefix / row["video"]
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(1, 4):
                Image.new("RGB", (16, 16), (10 * i, 0, 0)).save(folder / f"{i:05d}.jpg")
        else:
            write_mp4(root / "video" / task.prefix / row["video"])
        if stem in MVBENCH_BOUNDED:
            row.update(start=0.0, end=0.5)
        rows = [row]
        if stem == "action_sequence":
            rows.append({**row, "question": "What did the person do first?", "answer": "Took the book.",
                         "start": 0.1, "end": 0.4})
        _json(root / "json" / task.file, rows)
    return root


def write_nextqa(root: Path) -> Path:
    def row(video, qid, type_, answer, question):
        return {"video": video, "frame_count": 100, "width": 640, "height": 480, "question": question,
                "answer": answer, "qid": qid, "type": type_, "a0": "sit down", "a1": "run away ", "a2": "wave",
                "a3": "laugh", "a4": "cry"}
    rows = [row(4010069381, 0, "CW", 1, "why did the boy run"), row(4010069381, 1, "TN", 4, "what did the girl do next"),
            row(2399430475, 0, "DC", 0, "what is the man doing")]
    _parquet(root / "MC" / "test-00000-of-00001.parquet", rows)
    for vid in (4010069381, 2399430475):
        write_mp4(root / "NExTVideo" / f"{vid}.mp4")
    return root


HV_BLOCK = "A. The kitchen.\nB. The car.\nC. The garden.\nD. The office.\nE. The bedroom."


def write_hourvideo(root: Path) -> Path:
    data = {
        "uid-aaa": {"video_metadata": {"duration_in_seconds": 3000},
                    "benchmark_dataset": [
                        {"qid": "q1", "task": "perception/information_retrieval/factual_recall",
                         "question": "Where did I leave the keys?", "mcq_test": HV_BLOCK, "correct_answer_label": "B"},
                        {"qid": "q2", "task": "summarization/key_events", "question": "Summarise the video.",
                         "mcq_test": HV_BLOCK, "correct_answer_label": "E"}]},
        "uid-bbb": {"video_metadata": {"duration_in_seconds": 2000},
                    "benchmark_dataset": [
                        {"qid": "q1", "task": "navigation/room_to_room", "question": "How do I get to the garden?",
                         "mcq_test": HV_BLOCK, "correct_answer_label": "C"}]},
    }
    _json(root / "dev_v1.0_annotations.json", data)
    for uid in data:
        write_mp4(root / "videos" / f"{uid}.mp4")
    return root


WRITERS = {"lvbench": write_lvbench, "videomme": write_videomme, "mlvu": write_mlvu,
           "longvideobench": write_longvideobench, "mvbench": write_mvbench, "nextqa": write_nextqa,
           "hourvideo": write_hourvideo}


class Faulty(ReplayModel):
    """Fault injection around a real ReplayModel: dies after ``crash_after`` answers, cannot decode the videos in
    ``unreadable`` (the data pipeline's ``VideoDecodeError``), or raises ``encode_error`` from ``encode_video``;
    remembers every generation setting it was given."""

    def __init__(self, records, crash_after: int | None = None, unreadable: tuple[str, ...] = (),
                 encode_error: Exception | None = None) -> None:
        super().__init__(records)
        self.crash_after, self.unreadable, self.encode_error = crash_after, unreadable, encode_error
        self.answered: list[GenerationSettings] = []

    def encode_video(self, video: VideoRequest) -> str:
        if video.path in self.unreadable:
            raise VideoDecodeError("moov atom not found")
        if self.encode_error is not None:
            raise self.encode_error
        return super().encode_video(video)

    def answer(self, encoded: str, prompt: str, generation: GenerationSettings) -> str:
        if self.crash_after is not None and len(self.answered) == self.crash_after:
            raise RuntimeError("simulated crash (CUDA error)")
        self.answered.append(generation)
        return super().answer(encoded, prompt, generation)


def out_of_memory_model(path: str | None, device: str, dtype: str, **limits) -> Faulty:
    """A ``model.adapter`` factory (``vamba eval model.adapter=tests.evaluation.minibench:out_of_memory_model``)
    whose model runs out of memory encoding the first video, as a CUDA model can."""
    import torch

    return Faulty([], encode_error=torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB"))



def fixed_keys_model(path: str | None, device: str, dtype: str) -> Faulty:
    """A ``model.adapter`` factory taking only the three required keys (an adapter written for another model)."""
    return Faulty([])
