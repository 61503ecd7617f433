"""The GPU benchmark of ``vamba eval`` with decode workers (vamba/bench/eval_launched.py), whole, at the tiny scale on
the CPU: short remuxed files in the LVBench layout, a tiny random VAMBA, one decode worker."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.models.vamba_tiny import MAMBA, TEXT, VISION


def _checkpoint(path: Path) -> Path:
    from vamba.data.tiny_tokenizer import build_tiny_tokenizer
    from vamba.models import VambaConfig, VambaForConditionalGeneration

    tokenizer = build_tiny_tokenizer(path, ("The answer is B.",))
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    text = dict(TEXT, vocab_size=len(tokenizer), eos_token_id=eos, bos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    VambaForConditionalGeneration(VambaConfig(text_config=text, vision_config=dict(VISION),
                                              vision_mamba_mixer_config=dict(MAMBA))).save_pretrained(path)
    return path


def test_remuxed_long_file_reads_as_one_long_video(tmp_path: Path) -> None:
    pytest.importorskip("decord")
    from vamba.bench.eval_launched import make_long_video
    from vamba.data.video import DecordReader, PyAVReader

    made = make_long_video(tmp_path / "long.mp4", 20, 64, 48, fps=30, gop_s=0.5, clip_s=2)
    assert (made["frames"], made["fps"], made["width"], made["height"]) == (600, 30.0, 64, 48)
    # Every copy of the clip decodes as the first (closed GOPs), whichever decoder reads it.
    decord, pyav = DecordReader(tmp_path / "long.mp4"), PyAVReader(tmp_path / "long.mp4")
    assert (decord.get_frames([5, 35]) == decord.get_frames([545, 575])).all()
    assert pyav.info().num_frames == 600


@pytest.mark.slow  # ~30 s on 2 cores: two tiny evaluations, decode worker processes started twice
def test_eval_launched_writes_its_numbers(tmp_path: Path) -> None:
    pytest.importorskip("decord")
    from vamba.bench.eval_launched import main

    ckpt = _checkpoint(tmp_path / "ckpt")
    assert main(["--model", str(ckpt), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                 "--videos", "64x36:2", "128x72:1", "--seconds", "6", "--clip-s", "2", "--gop-s", "1",
                 "--questions", "2", "--num-frames", "8", "--max-new-tokens", "2", "--device", "cpu",
                 "--decode-workers", "1", "--baseline-videos", "1", "--videomme-durations", "4", "--tag", "cpu"]) == 0
    result = json.loads((tmp_path / "out" / "eval_launched_cpu.json").read_text())
    assert result["device"] == "cpu" and result["date"] and "code_commit" in result
    prefetch, base = result["runs"]["prefetch"]["timing"], result["runs"]["in_process"]["timing"]
    assert (prefetch["videos_encoded"], prefetch["questions"], base["videos_encoded"]) == (3, 6, 1)
    assert result["answers_equal"] is True
    assert 0 < result["gpu_busy_frac"] <= 1 and result["seconds_per_video"] > 0 and result["seconds_per_question"] > 0
    assert all(row["decode_s"] > 0 for row in result["runs"]["prefetch"]["videos"])
    for key in ("full_lvbench_hours_1gpu", "full_lvbench_hours_8gpu", "videomme_hours_1gpu", "videomme_hours_8gpu"):
        assert result[key] > 0
    assert result["full_lvbench_hours_8gpu"] < result["full_lvbench_hours_1gpu"]
    assert [f["frames"] for f in result["benchmark_folder"]["files"]] == [180, 180]
