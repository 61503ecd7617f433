"""The launched-training benchmark's logic on the CPU: a random checkpoint written as a user's, loaded by `vamba train
model.path=`, trained on real mp4 files by the real command, its log turned into the results row."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from vamba.bench.checkpoint import CheckpointArgs, write_random_checkpoint
from vamba.bench.train_launched import autotuning, fresh_caches, summarise
from vamba.bench.train_launched import main as launched_main
from vamba.data.synth import write_mp4
from vamba.models import VambaForConditionalGeneration


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    info = write_random_checkpoint(CheckpointArgs(out=str(out), size="tiny", device="cpu", dtype="float32"))
    return out, info


def test_random_checkpoint_is_a_complete_checkpoint(checkpoint, caplog) -> None:
    out, info = checkpoint
    assert info["size"] == "tiny" and info["parameters"] > 0 and info["build_s"] >= 0
    saved = json.loads((out / "random_checkpoint.json").read_text())
    assert saved["parameters"] == info["parameters"] and "environment" in saved
    model = VambaForConditionalGeneration.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) == info["parameters"]
    assert (out / "tokenizer.json").exists() and not out.with_name("tiny.partial").exists()
    from vamba.inference.chat import VambaChat

    with caplog.at_level(logging.WARNING, logger="vamba.inference.chat"):
        VambaChat.from_pretrained(out, device="cpu", dtype="float32")  # as vamba eval / chat load it
    assert "random weights" in caplog.text
    with pytest.raises(FileExistsError, match="not empty"):
        write_random_checkpoint(CheckpointArgs(out=str(out), size="tiny", device="cpu"))


def test_launched_run_row_comes_from_the_real_command(checkpoint, tmp_path) -> None:
    out, _ = checkpoint
    frames = (torch.arange(12 * 56 * 84 * 3) % 251).to(torch.uint8).reshape(12, 56, 84, 3).numpy()
    video = tmp_path / "clip.mp4"
    write_mp4(video, frames, fps=4)
    assert launched_main([f"out={tmp_path / 'res'}", f"checkpoint={out}", f"videos=[{video}]", "model=tiny",
                          "frames=4", "max_pixels=4704", "answer_words=6", "steps=3", "workers=1",
                          "runs=[like_for_like]", "tag=cpu", "overrides=[device=cpu]", "profile_steps=[2]"]) == 0
    result = json.loads((tmp_path / "res" / "train_launched_cpu.json").read_text())
    (row,) = result["runs"]
    assert row["status"] == "ok" and row["rc"] == 0 and row["steps"] == 3, row
    assert row["step_s"] > 0 and 0 <= row["data_wait_frac"] < 1 and row["startup_s"] > 0 and row["model_tflops"] > 0
    assert row["trainable"].startswith("trainable ") and "bench_step_s" not in row  # no GPU: no benchmark
    # logging.save_final=false and save_steps=0: no model and no Trainer checkpoint (at 7B ~60 GB on a 64 GiB disk)
    assert not list((tmp_path / "res" / "runs" / "like_for_like").glob("*checkpoint*"))
    assert not (tmp_path / "res" / "runs" / "like_for_like" / "final").exists()
    assert "| like_for_like | pretrain |" in (tmp_path / "res" / "train_launched_cpu.md").read_text()
    # the profiled step's operator table comes back beside the results (debug.profile_steps)
    assert row["profiles"] == ["profile_like_for_like_step2.txt"]
    assert "aten::mm" in (tmp_path / "res" / "profile_like_for_like_step2.txt").read_text()


def test_packed_stage1_run_reads_real_images_of_mixed_sizes(checkpoint, tmp_path) -> None:
    """The released stage 1: packed image-caption rows over JPEG and PNG files, no video needed; lambda = 0 and
    lambda = 1 with a Qwen2-VL teacher of the same sizes (transformers' class, random weights)."""
    out, _ = checkpoint
    teacher = tmp_path / "teacher"
    write_random_checkpoint(CheckpointArgs(out=str(teacher), size="tiny", kind="qwen2vl", device="cpu",
                                           dtype="float32"))
    args = [f"out={tmp_path / 'res'}", f"checkpoint={out}", "model=tiny", "steps=3", "workers=1", "tag=cpu",
            "image_scale=0.05", "packed_max_pixels=4704", "packed_video_budget=64", "packed_text_budget=512",
            "overrides=[device=cpu]"]
    with pytest.raises(ValueError, match="teacher="):
        launched_main([*args, "runs=[stage1_packed_distill]"])
    assert launched_main([*args, "runs=[stage1_packed,stage1_packed_distill]", f"teacher={teacher}"]) == 0
    result = json.loads((tmp_path / "res" / "train_launched_cpu.json").read_text())
    row, distilled = result["runs"]
    for r in (row, distilled):
        assert r["status"] == "ok" and r["steps"] == 3 and r["frames"] == "packed", r
        assert r["tokens_per_s"] > 0 and "bench_step_s" not in r
    assert not row["distill"] and distilled["distill"]
    logged = [json.loads(line) for line in
              (tmp_path / "res" / "runs" / "stage1_packed_distill" / "log.jsonl").read_text().splitlines()]
    assert all("distill_loss" in s and s["teacher_s"] > 0 for s in logged if "loss" in s)
    assert distilled["teacher_s"] > 0 and row["teacher_s"] is None and row["forward_s"] > 0
    images = sorted(p.suffix for p in (tmp_path / "res" / "images").iterdir() if p.suffix != ".yaml")
    assert {".jpg", ".png"} <= set(images)
    log = (tmp_path / "res" / "runs" / "stage1_packed" / "run_info.json").read_text()
    assert "data.packing=true" in log and '"packed_rows"' in log


def test_stage2_runs_mix_image_and_video_samples(checkpoint, tmp_path) -> None:
    """The released stage 2: image and video samples in one mixture; the 2B config whole and 7B with LoRA (here both
    the tiny model: the 2B run reads checkpoint_2b)."""
    out, _ = checkpoint
    frames = (torch.arange(8 * 56 * 84 * 3) % 251).to(torch.uint8).reshape(8, 56, 84, 3).numpy()
    video = tmp_path / "clip.mp4"
    write_mp4(video, frames, fps=4)
    args = [f"out={tmp_path / 'res'}", f"checkpoint={out}", f"videos=[{video}]", "model=tiny", "frames=4",
            "max_pixels=4704", "answer_words=6", "steps=3", "workers=1", "image_scale=0.05", "tag=cpu",
            "overrides=[device=cpu]"]
    with pytest.raises(ValueError, match="checkpoint_2b"):
        launched_main([*args, "runs=[sft_mixed_2b]"])
    assert launched_main([*args, "runs=[sft_mixed_2b,sft_mixed_lora_7b]", f"checkpoint_2b={out}", "model_2b=tiny"]) == 0
    result = json.loads((tmp_path / "res" / "train_launched_cpu.json").read_text())
    whole, lora = result["runs"]
    for row in (whole, lora):
        assert row["status"] == "ok" and row["steps"] == 3 and row["data"] == "mixed", row
        info = json.loads((tmp_path / "res" / "runs" / row["name"] / "run_info.json").read_text())
        assert info["summary"]["samples_per_source"] == {"video_qa": 8, "captions": 8}, info["summary"]
    assert whole["size"] == "2b" and not whole["lora"] and lora["lora"]
    assert "lora" in lora["trainable"].lower() and "lora" not in whole["trainable"].lower(), (whole, lora)


def test_workers_fit_the_hosts_memory() -> None:
    """Twelve workers at 1,024 frames were killed for host memory on the 125 GiB H100 host (2026-12-07)."""
    from vamba.bench.train_launched import auto_workers
    from vamba.data.host_memory import GIB

    assert auto_workers(1024, 250_000, 47.0, 16, 125 * GIB) == 2  # beside the offloaded stage-1 AdamW states
    assert auto_workers(1024, 250_000, 0.0, 16, 125 * GIB) == 5
    assert auto_workers(16, 50_176, 0.0, 16, 125 * GIB) == 12  # small samples: the CPUs bound it
    assert auto_workers(1024, 250_000, 47.0, 16, None) == 1  # unknown memory: one worker
    assert auto_workers(1024, 250_000, 47.0, 16, 125 * GIB, "uint8") == 9  # uint8 patches: a quarter of the bytes


def test_autotuning_is_read_from_tritons_own_messages() -> None:
    """The lines Triton 3.6's Autotuner.run prints under TRITON_PRINT_AUTOTUNING=1 (its f-string, filled in), among
    a run's other output; a kernel tuned for two keys counts twice."""
    def message(name: str, key: tuple, seconds: float) -> str:
        return (f"Triton autotuning for function {name},\nwith key as {key},\nfinished after {seconds:.2f}s,\n"
                f"best config selected: BLOCK_SIZE_M: 64, BLOCK_SIZE_N: 32, num_warps: 4, num_stages: 3;\n")

    text = ("[rank0] step 1\n" + message("_chunk_scan_bwd_dx_kernel", (256, 128, 128, True, "torch.bfloat16"), 3.25)
            + "{'loss': 12.5}\n" + message("_chunk_state_bwd_db_kernel", (256, 128, 128, "torch.float32"), 1.5)
            + message("_chunk_scan_bwd_dx_kernel", (256, 64, 128, False, "torch.bfloat16"), 0.75))
    assert autotuning(text) == {"tunings": 3, "seconds": 5.5,
                                "kernels": {"_chunk_scan_bwd_dx_kernel": 4.0, "_chunk_state_bwd_db_kernel": 1.5}}
    assert autotuning("{'loss': 12.5}\n") is None


def test_a_fresh_run_starts_from_empty_caches_holding_only_the_choices(tmp_path, monkeypatch) -> None:
    """stage1_packed_fresh's environment: new Triton and Inductor caches, the former with the choices files of the
    warm Triton cache and nothing else of it (compiled kernels, Triton's own autotune records)."""
    warm = tmp_path / "warm"
    (warm / "0a1b").mkdir(parents=True)
    (warm / "0a1b" / "kernel.cubin").write_bytes(b"\0")
    (warm / "vamba-autotune-NVIDIA-H100-triton3.6.0-mamba2.3.2.json").write_text('{"format": 1, "kernels": {}}')
    monkeypatch.setenv("TRITON_CACHE_DIR", str(warm))
    folder = tmp_path / "fresh"
    (folder / "inductor").mkdir(parents=True)
    (folder / "inductor" / "stale.py").write_text("")  # an earlier call's: removed
    env = fresh_caches(folder)
    assert env["TRITON_CACHE_DIR"] == str(folder / "triton")
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(folder / "inductor")
    assert [p.name for p in (folder / "triton").iterdir()] == ["vamba-autotune-NVIDIA-H100-triton3.6.0-mamba2.3.2.json"]
    assert list((folder / "inductor").iterdir()) == []


def test_profiled_steps_stay_out_of_the_medians(tmp_path) -> None:
    """A step torch.profiler recorded is slow (2026-12-07, H100: 39.7 s against 5.0): the row's medians skip it."""
    log = tmp_path / "log.jsonl"
    seconds = [295.0, 4.8, 5.0, 39.7, 4.9, 5.1]
    log.write_text("".join(json.dumps({"step": n + 1, "loss": 1.0, "step_s": s, "forward_s": s / 3}) + "\n"
                           for n, s in enumerate(seconds)))
    assert summarise(log)["step_s"] == 5.05  # steps 3-6 with the profiled one
    row = summarise(log, profiled=[1, 4])
    assert row["step_s"] == 5.0 and row["forward_s"] == 1.667 and row["step_s_all"] == seconds
    assert row["first_step"]["step_s"] == 295.0
    assert summarise(log, profiled=[3, 4, 5, 6])["step_s"] == 5.05  # nothing left unprofiled: all of them
