"""The data-pipeline benchmark on the CPU at a tiny scale: a real mp4 through `vamba train`'s data set (the paper's
SFT data settings, packing on), each stage timed, dataset[i] beside it, the real DataLoader at 0 and 1 workers."""
from __future__ import annotations

import json

import torch

from vamba.bench.data_pipeline import STAGES, loader_settings, main, train_config
from vamba.data.synth import write_mp4


def test_every_stage_is_timed_and_the_workers_needed_follow(tmp_path) -> None:
    frames = (torch.arange(12 * 56 * 84 * 3) % 251).to(torch.uint8).reshape(12, 56, 84, 3).numpy()
    video = tmp_path / "clip.mp4"
    write_mp4(video, frames, fps=4)
    assert main([f"out={tmp_path / 'res'}", f"videos=[{video}]", "frames=[4]", "workers=[0,1]", "samples=2",
                 "loader_samples=2", "answer_words=6", "step_s=0.001", "tag=cpu"]) == 0
    result = json.loads((tmp_path / "res" / "data_pipeline_cpu.json").read_text())
    assert result["code_commit"] and result["date"] and result["device"] and "environment" in result
    (row,) = result["frames"]
    assert row["data"]["packing"] and row["data"]["max_pixels"] == 200704 and row["data"]["num_frames"] == 4
    timed = [k for k in STAGES if k != "header"]  # header: only with data.max_video_tokens (null in paper_sft)
    assert set(row["stages_s"]) == {*timed, "collate"}
    assert all(row["stages_s"][k] > 0 for k in row["stages_s"]), row["stages_s"]
    assert sum(s["samples"] for s in row["samples"]) == 2 and all(s["item_s"] > 0 for s in row["samples"])
    assert 0.2 < row["stage_sum_over_item"] < 5, (row["stage_sum_s"], row["item_s"])
    assert row["per_sample_s"] >= row["item_s"] > 0 and row["samples_per_s_per_worker"] > 0
    # paper_sft's data config sends uint8 patches (data.pixel_dtype): one byte a value of [P, 1176]
    assert row["data"]["pixel_dtype"] == "uint8"
    assert row["bytes"]["pixel_bytes"] == 4 // 2 * (56 // 14) * (84 // 14) * 1176
    # with step_s=1 ms a worker cannot keep up alone: ceil(per_sample * batch * margin / step)
    assert row["workers_needed"] > 1 and abs(row["workers_needed"] - row["per_sample_s"] * 1.25 / 0.001) <= 2
    loader = {x["workers"]: x for x in row["loader"]}
    assert set(loader) == {0, 1} and all(x["status"] == "ok" and x["samples"] == 2 and x["samples_per_s"] > 0
                                         for x in loader.values())
    assert row["training_loader"]["pin_memory"] is False  # the CPU: the Trainer pins nothing
    md = (tmp_path / "res" / "data_pipeline_cpu.md").read_text()
    assert "| 4 | 84x56 |" in md and "| 4 | 1 | 2 |" in md


def test_vamba_train_pins_host_memory_for_a_gpu() -> None:
    """`vamba train` on CUDA: the Trainer's DataLoader pins its batches (TrainingArguments' default, kept by
    vamba.training.run.training_arguments); only a CPU run turns it off."""
    # bf16 off: TrainingArguments refuses bf16 where no GPU is (this test's machine); it does not touch pinning
    cfg = train_config(["experiment=paper_sft", "data.mixture=unused.yaml", "device=cuda", "optim.bf16=false"])
    settings = loader_settings(cfg)
    assert settings["pin_memory"] is True and settings["num_workers"] == 8
    assert loader_settings(train_config(["data.mixture=unused.yaml", "device=cpu"]))["pin_memory"] is False
