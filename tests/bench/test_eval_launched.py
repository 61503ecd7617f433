"""The GPU benchmark of ``vamba eval`` with decode workers (vamba/bench/eval_launched.py,
scripts/gpu/eval_launched.sh), whole, at the tiny scale on the CPU: short remuxed files in the LVBench layout, a tiny
random VAMBA, one decode worker."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.models.vamba_tiny import MAMBA, TEXT, VISION

ROOT = Path(__file__).resolve().parents[2]


def _checkpoint(path: Path) -> Path:
    from vamba.data.tiny_tokenizer import build_tiny_tokenizer
    from vamba.models import VambaConfig, VambaForConditionalGeneration

    tokenizer = build_tiny_tokenizer(path, ("The answer is B.",))
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    text = dict(TEXT, vocab_size=len(tokenizer), eos_token_id=eos, bos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id)
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


@pytest.mark.slow  # ~40 s on 2 cores: two tiny evaluations, decode worker processes started twice
def test_the_gpu_script_writes_its_numbers(tmp_path: Path) -> None:
    """scripts/gpu/eval_launched.sh whole, in its CPU mode (only the flags differ from the GPU call)."""
    pytest.importorskip("decord")
    ckpt = _checkpoint(tmp_path / "ckpt")
    env = dict(os.environ, OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"), VAMBA_CKPT=str(ckpt),
               VIDEOS="64x36:2 128x72:1", QUESTIONS="2", BASELINE_VIDEOS="1", SECONDS_PER_VIDEO="6", VIDEOMME="4",
               TAG="cpu", PYTHONPATH=str(ROOT),
               BENCH_ARGS="--clip-s 2 --gop-s 1 --num-frames 8 --max-new-tokens 2 --device cpu --decode-workers 1")
    done = subprocess.run(["bash", "scripts/gpu/eval_launched.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "OK: eval_launched_cpu.json"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["eval_launched.log", "eval_launched_cpu.json",
                                                                     "machine.txt", "mem.log"]
    assert "GiB available" in (tmp_path / "out" / "mem.log").read_text()
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
    fill = result["first_video_wait"]  # the first video's wait without a model, split among the workers and whole
    assert [r["split"] for r in fill] == [True, False] and all(r["wait_s"] > 0 and r["parts"] == 1 for r in fill)
    assert result["projection"]["fill_s"] == result["runs"]["prefetch"]["videos"][0]["wait_s"]

    # A video the workers cannot decode: the benchmark fails, and keeps the timing of the others (the folder is
    # reused; the broken file replaces its hard link only).
    broken = tmp_path / "work" / "lvbench" / "videos" / "bench001_64x36.mp4"
    broken.unlink()
    broken.write_bytes(b"not a video" * 100)
    env.update(OUT=str(tmp_path / "partial"))
    done = subprocess.run(["bash", "scripts/gpu/eval_launched.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode != 0 and done.stderr.strip().splitlines()[-1].startswith("FAILED: the benchmark exited")
    partial = json.loads((tmp_path / "partial" / "eval_launched_cpu.json").read_text())
    assert [v["video"].endswith("bench001_64x36.mp4") for v in partial["skipped"]] == [True]
    assert partial["runs"]["prefetch"]["timing"]["videos_encoded"] == 2 and partial["gpu_busy_frac"] > 0

    # No checkpoint: a one-line reason, a failing exit, nothing run.
    env.update(VAMBA_CKPT=str(tmp_path / "nothing"), OUT=str(tmp_path / "bad"))
    done = subprocess.run(["bash", "scripts/gpu/eval_launched.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode != 0 and done.stdout.strip().splitlines()[-1].startswith("FAILED: VAMBA_CKPT=")


def test_fill_only_measures_the_first_videos_wait_split_and_whole(tmp_path: Path) -> None:
    """``--fill-only``: the files, then the first video's wait with two workers, split in two and whole; no model."""
    pytest.importorskip("decord")
    from vamba.bench.eval_launched import main

    assert main(["--model", "none", "--out", str(tmp_path), "--work", str(tmp_path / "work"), "--videos", "64x36:3",
                 "--seconds", "6", "--clip-s", "2", "--gop-s", "1", "--num-frames", "64", "--decode-workers", "2",
                 "--device", "cpu", "--tag", "cpu", "--fill-only"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first_video_wait_cpu.json", "work"]
    result = json.loads((tmp_path / "first_video_wait_cpu.json").read_text())
    assert result["benchmark"] == "first_video_wait" and result["device"] == "cpu" and "code_commit" in result
    assert [(r["split"], r["parts"]) for r in result["first_video_wait"]] == [(True, 2), (False, 1)]
    assert all(r["wait_s"] > 0 and r["decode_s"] > 0 for r in result["first_video_wait"])
