"""The evaluation adapter end to end: `vamba eval benchmark=lvbench` on synthetic LVBench with a saved tiny VAMBA."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vamba.cli import main as vamba_main
from vamba.evaluation.interface import FrameSettings, GenerationSettings, VideoQAModel, VideoRequest
from vamba.inference.video_qa import load_video_qa_model
from vamba.utils.io import read_jsonl


def test_adapter_is_a_video_qa_model(checkpoint: Path, synth_dir: Path) -> None:
    model = load_video_qa_model(str(checkpoint), device="cpu", dtype="float32")
    assert isinstance(model, VideoQAModel)
    request = VideoRequest(str(synth_dir / "lvbench" / "videos" / "synth0002.mp4"),
                           FrameSettings(6, shortest_edge=96, longest_edge=480))
    encoded = model.encode_video(request)
    assert encoded.frames == 6 and encoded.grid == (3, 6, 6)  # 64x64 raised to 96x96, smart_resize: 84x84
    reply = model.answer(encoded, "Which colour?", GenerationSettings(max_new_tokens=3))
    assert reply == model.answer(encoded, "Which colour?", GenerationSettings(max_new_tokens=3))
    with pytest.raises(ValueError, match="model.path"):
        load_video_qa_model(None)


def test_frame_folder_requests_count_from_the_first_file(checkpoint: Path, tmp_path: Path) -> None:
    model = load_video_qa_model(str(checkpoint), device="cpu", dtype="float32")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (8, 56, 56, 3), dtype=np.uint8)
    for i, f in enumerate(frames, start=1):
        Image.fromarray(f).save(tmp_path / f"{i:05d}.jpg", quality=95)
    request = VideoRequest(str(tmp_path), FrameSettings(4, sampling="mvbench_segments", shortest_edge=None,
                                                        longest_edge=None),
                           is_frame_folder=True, frame_folder_fps=3.0, first_frame_index=1)
    encoded = model.encode_video(request)
    assert encoded.frames == 4 and encoded.grid == (2, 4, 4)


def test_vamba_eval_lvbench_end_to_end_and_resume(checkpoint: Path, synth_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    argv = ["eval", "benchmark=lvbench", f"data={synth_dir / 'lvbench'}", f"model.path={checkpoint}",
            "model.device=cpu", "model.dtype=float32", "num_frames=8", "max_new_tokens=4", f"out={out}",
            "progress=false"]
    assert vamba_main(argv) == 0
    assert "LVBench overall =" in capsys.readouterr().out
    records = read_jsonl(out / "responses.jsonl")
    questions = read_jsonl(synth_dir / "lvbench" / "video_info.meta.jsonl")
    assert len(records) == sum(len(v["qa"]) for v in questions) == 3
    assert all(isinstance(r["response"], str) for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["answered"] == summary["expected"] == 3 and summary["complete"]
    assert (out / "report.md").read_text().startswith("#")
    status = json.loads((out / "shards" / "rank0.status.json").read_text())
    assert status["videos_encoded"] == 3 and status["skipped"] == []

    # Interrupted run: the shard lost its last record. A restart answers only that question, the same way.
    shard = out / "shards" / "rank0.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text("".join(lines[:-1]))
    assert vamba_main(argv) == 0
    status = json.loads((out / "shards" / "rank0.status.json").read_text())
    assert status["videos_encoded"] == 1
    again = read_jsonl(out / "responses.jsonl")
    assert [r["response"] for r in again] == [r["response"] for r in records]


def test_corrupt_video_costs_its_questions_only(checkpoint: Path, synth_dir: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "lvbench"
    shutil.copytree(synth_dir / "lvbench", root)
    (root / "videos" / "synth0001.mp4").write_bytes(b"\x00" * 1000)
    out = tmp_path / "run"
    assert vamba_main(["eval", "benchmark=lvbench", f"data={root}", f"model.path={checkpoint}", "model.device=cpu",
                       "model.dtype=float32", "num_frames=4", "max_new_tokens=2", f"out={out}",
                       "progress=false"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["answered"] == 2 and summary["skipped"]["questions"] == 1
    assert not summary["complete"]


def test_the_python_loaders_take_every_commands_dtype_rule(checkpoint) -> None:
    """``VambaChat.from_pretrained`` and ``load_video_qa_model`` without a dtype: float32 on a CPU (bfloat16 only on
    CUDA), as ``vamba chat`` / ``vamba eval`` with ``dtype=auto`` (they used to load bfloat16 on a CPU)."""
    import torch

    from vamba.inference.chat import VambaChat

    assert VambaChat.from_pretrained(checkpoint, device="cpu").model.dtype == torch.float32
    assert load_video_qa_model(str(checkpoint), device="cpu").chat.model.dtype == torch.float32
    assert VambaChat.from_pretrained(checkpoint, device="cpu", dtype="bfloat16").model.dtype == torch.bfloat16
