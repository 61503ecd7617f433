"""The efficiency benchmark's logic at tiny scale on the CPU (same code path as the GPU run), through `vamba bench`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vamba.bench.build import frame_grid, vamba_config
from vamba.bench.efficiency_report import fp8_markdown
from vamba.cli import main as vamba_main
from vamba.models.flops import qwen_llm_flops, vamba_llm_flops
from vamba.models.mamba2 import Mamba2Block

TINY = ["bench", "device=cpu", "scale=tiny", "frame_size=56x84", "piece_frames=2", "reps=1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    assert vamba_main([*TINY, "num_frames=[2,4]", "stage1_frames=4", "answer_frames=4", "answer_tokens=3",
                       f"out={out}", "tag=t"]) == 0
    return out


@pytest.mark.slow
def test_every_point_is_measured_with_its_parts(run: Path) -> None:
    result = json.loads((run / "efficiency_t.json").read_text())
    assert result["device"] == "cpu" and result["environment"]["versions"]["torch"] and result["date"]
    assert result["setup"]["tokens_per_2_frames"] == 6  # 56x84 -> 4x6 patches -> 2x3 merged tokens
    assert result["setup"]["vamba_vision_attention"] == "auto"  # VAMBA's fast vision forward (the baseline: stock)
    rows = result["rows"]
    assert sorted((r["model"], r["mode"], r["frames"]) for r in rows) == sorted(
        [(m, mode, n) for m in ("vamba", "qwen2_vl") for mode in ("prefill", "train") for n in (2, 4)]
        + [("vamba", mode, n) for mode in ("train_shared", "train_offload") for n in (2, 4)]
        + [("vamba", "answer", 4)])
    for r in rows:
        assert r["status"] == "ok" and r["total_ms"] > 0 and r["vision_ms"] > 0, r
        assert 0 < r["vision_ms"] < r["total_ms"]
        assert r["llm_ms"] == pytest.approx(r["total_ms"] - r["vision_ms"], abs=0.02)
        assert r["video_tokens"] == r["frames"] // 2 * 6
        if r["mode"] == "answer":  # streamed, prefilled and 3 tokens decoded: more than the prefill alone
            assert r["answer_tokens"] == 3 and r["decode_tokens_per_s"] > 0
            continue
        assert r["llm_mfu"] > 0 and r["llm_tflop"] >= 0
        # Offloading: the two streams entering each of the 2 layers, float32, 1 row (text 128 + video tokens).
        stream_bytes = 2 * 64 * 4 * (128 + r["video_tokens"])
        assert r.get("host_bytes", 0) == (stream_bytes if r["mode"] == "train_offload" else 0)
    vamba, qwen = result["models"]["vamba"], result["models"]["qwen2_vl"]
    assert vamba["parameters"] > qwen["parameters"] and vamba["vision"] == qwen["vision"]
    assert qwen["trainable"] == {"prefill": 0, "train": qwen["parameters"] - qwen["vision"]}
    # Frozen in VAMBA's LLM: exactly the last layer's Mamba-2 block (its output feeds nothing).
    last_mixer = sum(p.numel() for p in Mamba2Block(vamba_config("tiny", "reference").mamba_config()).parameters())
    trained = vamba["trainable"]
    assert vamba["parameters"] - vamba["vision"] - trained["train"] == last_mixer
    # train_shared: exactly as many weights as Qwen2-VL's LLM; stage 1: the new modules; together: the LLM.
    assert trained["train_shared"] == qwen["trainable"]["train"]
    assert trained["stage1"] + trained["train_shared"] == trained["train"]
    assert trained["train_offload"] == trained["train"]


@pytest.mark.slow
def test_stage1_summary_and_plots(run: Path) -> None:
    stage1 = json.loads((run / "efficiency_stage1_t.json").read_text())
    assert stage1["status"] == "ok" and stage1["frames"] == 4 and stage1["total_ms"] > 0
    assert stage1["trainable_parameters"] == json.loads((run / "efficiency_t.json").read_text())[
        "models"]["vamba"]["trainable"]["stage1"] > 0
    summary = (run / "efficiency_t.md").read_text()
    assert "## Prefill" in summary and "## Training step" in summary and "## Goals" in summary
    assert summary.count("\n| 2 | 6 |") == 4 and summary.count("\n| 4 | 12 |") == 4
    for name in ("memory", "time"):
        assert (run / f"efficiency_t_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        (run / f"efficiency_t_{name}.png").unlink()
    (run / "efficiency_t.md").unlink()
    assert vamba_main(["bench", "--report-only", str(run / "efficiency_t.json")]) == 0  # e.g. after a cut-short run
    assert (run / "efficiency_t.md").read_text() == summary and (run / "efficiency_t_time.png").exists()


def test_out_of_memory_stops_the_sweep_and_the_budget_skips(tmp_path: Path) -> None:
    # 2^34 frames cannot be allocated: a real allocator refusal, recorded as "oom"; larger points are not run.
    assert vamba_main([*TINY, "--models", "vamba", "--modes", "prefill", "--frames", "2", str(2**34), str(2**35),
                       "--stage1-frames", "0", "--point-cap-s", "1e30", "--budget-s", "1e30",
                       "--out-dir", str(tmp_path), "--tag", "oom"]) == 0
    rows = json.loads((tmp_path / "efficiency_oom.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok", "oom", "not run: smaller point out of memory"]
    assert vamba_main([*TINY, "--models", "qwen2_vl", "--modes", "train", "--frames", "2", "4",
                       "--point-cap-s", "1e-9", "--stage1-frames", "0", "--out-dir", str(tmp_path),
                       "--tag", "cap"]) == 0
    rows = json.loads((tmp_path / "efficiency_cap.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok", "skipped: time budget"]


def test_answer_row_with_some_modes_only(tmp_path: Path) -> None:
    """The answer row's time budget reads only the phases of the modes asked for (``--modes prefill train_shared``
    once crashed there with KeyError 'vamba_train')."""
    assert vamba_main([*TINY, "--models", "vamba", "--modes", "prefill", "train_shared", "--frames", "2",
                       "--answer-frames", "2", "--answer-tokens", "2", "--stage1-frames", "0",
                       "--out-dir", str(tmp_path), "--tag", "modes"]) == 0
    rows = json.loads((tmp_path / "efficiency_modes.json").read_text())["rows"]
    assert [(r["mode"], r["status"]) for r in rows] == [("prefill", "ok"), ("train_shared", "ok"), ("answer", "ok")]
    assert rows[-1]["decode_tokens_per_s"] > 0


def test_frame_grid_and_flop_counts() -> None:
    assert frame_grid(640, 360) == (26, 46)  # 644x364: 1196 patches per frame pair, 299 merged tokens
    config = vamba_config("2b", "reference")
    with torch.device("meta"):
        from vamba.models import VambaForConditionalGeneration

        model = VambaForConditionalGeneration(config)
    dead = set(model.parameters_without_effect())
    video_params = sum(p.numel() for n, p in model.named_parameters() if n not in dead and (
        ".vision_mixer." in n or ".cross_attn.k_proj.weight" in n or ".cross_attn.v_proj.weight" in n))
    # Per video token: 2 FLOPs per weight it meets, plus the scan's own work (a few percent).
    assert 1.0 < vamba_llm_flops(config, 1000, 0, 0) / (2 * video_params * 1000) < 1.1
    text_params = sum(p.numel() for n, p in model.named_parameters() if n.startswith("model.layers.")
                      and ("self_attn" in n or "mlp" in n or "cross_attn.q_proj" in n or "cross_attn.o_proj" in n)
                      and n.endswith("weight"))
    assert vamba_llm_flops(config, 0, 1, 0) == pytest.approx(2 * text_params, rel=1e-3)
    assert qwen_llm_flops(config, 1000, 0, 0) > 7 * vamba_llm_flops(config, 1000, 0, 0) / 10  # same order at 1k tokens


def test_benchmark_imports_nothing_the_gpu_image_lacks() -> None:
    """The GPU image has torch, transformers, triton, matplotlib, but no hydra/omegaconf/wandb/decord/av."""
    import subprocess
    import sys

    code = ("import sys, vamba.bench.efficiency, vamba.bench.answer, vamba.inference.chat, "
            "vamba.data.tiny_tokenizer; "  # + answer_file's
            "print(sorted(m for m in ('hydra', 'omegaconf', 'wandb', 'decord', 'av', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


def _row(model: str, mode: str, frames: int, status: str = "ok", total: float = 1.0, llm: float = 0.5,
         peak: float = 10.0) -> dict:
    row = {"model": model, "mode": mode, "frames": frames, "video_tokens": frames // 2 * 299, "status": status}
    if status == "ok":
        row.update(total_ms=1e3 * total, vision_ms=1e3 * (total - llm), llm_ms=1e3 * llm, peak_gib=peak,
                   peak_above_start_gib=peak / 2, llm_mfu=0.3)
    return row


def test_goal_verdicts() -> None:
    """The summary's goal lines (inputs built by hand; the benchmark's rows have exactly these fields)."""
    from vamba.bench.efficiency_report import goals

    rows = [_row("qwen2_vl", "prefill", 1024, total=12.0, llm=10.0), _row("qwen2_vl", "prefill", 2048, "oom"),
            _row("vamba", "prefill", 1024, total=2.0, llm=0.5), _row("vamba", "prefill", 3600, total=7.0),
            _row("vamba", "prefill", 4096, total=8.0), _row("vamba", "prefill", 8192, "oom"),
            _row("qwen2_vl", "train", 512, peak=50.0), _row("qwen2_vl", "train", 1024, "oom"),
            _row("vamba", "train", 512, peak=60.0), _row("vamba", "train", 1024, "oom"),
            _row("vamba", "train_shared", 512, peak=24.0), _row("vamba", "train_shared", 1024, peak=30.0)]
    rows[2].update(vision_mfu=0.58, llm_mfu=0.61)
    rows[3].update(vision_mfu=0.57, llm_mfu=0.50)
    verdicts = {goal: (measured, verdict) for goal, measured, verdict in goals({"rows": rows, "memory_cap_gib": 79.2})}
    assert verdicts["prefill at 1024 frames >= 5x faster (aim 6x)"] == (
        "6.00x (VAMBA 2.00 s, Qwen2-VL 12.00 s; LLM part 20.00x; aim met)", "met")
    assert verdicts["the hour (3600 frames) prefilled in <= 12 s (aim 10 s)"] == (
        "7.00 s (vision 6.50 + LLM 0.50; aim 10 s met)", "met")
    assert verdicts["vision tower >= 55% of the matmul rate at every prefill point up to 3600 frames"] == (
        "1024: 58%, 3600: 57%", "met")
    assert verdicts["VAMBA LLM prefill >= 55% of the matmul rate at every prefill point up to 3600 frames"] == (
        "1024: 61%, 3600: 50%", "NOT met")
    assert verdicts["whole-LLM training (train) at 1024 frames within 79.2 GiB"] == ("out of memory", "NOT met")
    assert verdicts["training-step memory at 512 frames <= 1/2 (train)"][1] == "NOT met"
    assert verdicts["training-step memory at 512 frames <= 1/2 (train_shared)"][1] == "met"
    assert verdicts[">= 4x more frames fit (prefill)"] == ("VAMBA 4096 vs Qwen2-VL 1024 frames (4.0x)", "met")
    assert verdicts[">= 4x more frames fit (train)"][1] == "NOT met"
    # train_shared never ran out of memory below 4x: the sweep did not go far enough to tell.
    assert verdicts[">= 4x more frames fit (train_shared)"] == ("VAMBA 1024+ vs Qwen2-VL 512 frames (2.0x)",
                                                                 "not measured")
    assert verdicts["an hour at 1 fps (3600 frames) answered on one GPU"][1] == "met"
    assert goals({"rows": []})[0][2] == "not measured"


def test_points_in_order_with_a_fallback_and_the_hour_from_a_video_file(tmp_path: Path) -> None:
    """``--points``: measured in the order given, one model at a time; an out-of-memory point is followed by its
    fallback and stops the larger points of its mode; ``answer_file`` streams a real mp4 through VambaChat.encode
    (decode thread, resize pool, patches) and decodes exactly the asked number of tokens."""
    import numpy as np

    from vamba.data.synth import write_mp4

    x, y = np.arange(84)[None, :, None], np.arange(56)[:, None, None]
    write_mp4(tmp_path / "hour.mp4", np.stack([((x + 9 * i + 0 * y) % 256).astype(np.uint8).repeat(3, -1)
                                               for i in range(6)]), fps=1)
    huge = 2**34  # cannot be allocated: a real allocator refusal, recorded as "oom"
    points = ["vamba:prefill:4", "qwen2_vl:prefill:4", "vamba:answer_file:6", f"vamba:train:{huge}/2",
              f"vamba:train:{2 * huge}", "vamba:stage1:2", "qwen2_vl:train:2"]
    assert vamba_main([*TINY, "--frame-size", "84x56", "--answer-tokens", "3", "--answer-video",
                       str(tmp_path / "hour.mp4"), "--workers", "2", "--points", *points,
                       "--out-dir", str(tmp_path), "--tag", "plan"]) == 0
    result = json.loads((tmp_path / "efficiency_plan.json").read_text())
    rows = result["rows"]
    assert [(r["model"], r["mode"], r["frames"], r["status"]) for r in rows] == [
        ("vamba", "prefill", 4, "ok"), ("qwen2_vl", "prefill", 4, "ok"), ("vamba", "answer_file", 6, "ok"),
        ("vamba", "train", huge, "oom"), ("vamba", "train", 2, "ok"),
        ("vamba", "train", 2 * huge, "not run: smaller point out of memory"), ("vamba", "stage1", 2, "ok"),
        ("qwen2_vl", "train", 2, "ok")]
    assert result["setup"]["points"] == points and result["setup"]["vamba_vision_compile"] is False
    answer = rows[2]
    assert answer["answer_tokens"] == 3 and answer["video"] == "hour.mp4" and answer["workers"] == 2
    assert 0 < answer["encode_ms"] < answer["time_to_first_token_ms"] < answer["total_ms"]
    assert answer["decode_tokens_per_s"] > 0 and answer["host_decode_s"] > 0 and 0 < answer["vision_ms"]
    for r in rows:
        if r["status"] == "ok" and r["mode"] != "answer_file":
            assert r["vision_mfu"] > 0 and r["llm_mfu"] > 0 and r["vision_ms"] > 0
    trained = result["models"]["vamba"]["trainable"]
    assert 0 < trained["stage1"] < trained["train"]
    summary = (tmp_path / "efficiency_plan.md").read_text()
    assert "## An hour answered end to end from a video file" in summary and "## Stage-1 training step" in summary
    with pytest.raises(ValueError, match="MODEL:MODE:FRAMES"):
        vamba_main([*TINY, "--points", "vamba:prefill", "--out-dir", str(tmp_path)])


def test_waiting_for_the_video_stops_at_its_writers_failure(tmp_path: Path) -> None:
    from vamba.bench.hour import wait_for

    video = tmp_path / "hour.mp4"
    (tmp_path / "hour.mp4.failed").write_text("ModuleNotFoundError: No module named 'cv2'")
    assert wait_for(video, 600) == f"the writer of {video} failed: ModuleNotFoundError: No module named 'cv2'"
    assert wait_for(video.with_name("other.mp4"), 0) == f"{video.with_name('other.mp4')} was not written within 0 s"
    video.write_bytes(b"")
    assert wait_for(video, 0) is None


def test_fp8_rows_carry_their_precision(tmp_path: Path) -> None:
    assert vamba_main([*TINY, "fp8=all", "points=[vamba:prefill:4,qwen2_vl:prefill:4]", f"out={tmp_path}",
                       "tag=f"]) == 0
    result = json.loads((tmp_path / "efficiency_f.json").read_text())
    assert result["setup"]["vamba_fp8"] == "all" and result["fp8_matmul_tflops"] > 0
    assert {(r["model"], r["precision"]) for r in result["rows"]} == {("vamba", "fp8"), ("qwen2_vl", "fp32")}
    # the FP8 column: the same points without FP8, side by side (scripts/gpu/fp8.sh writes it)
    assert vamba_main([*TINY, "points=[vamba:prefill:4,qwen2_vl:prefill:4]", f"out={tmp_path}", "tag=b"]) == 0
    base = json.loads((tmp_path / "efficiency_b.json").read_text())
    table = fp8_markdown(base, result)
    v16, v8 = (next(r for r in d["rows"] if r["model"] == "vamba") for d in (base, result))
    assert f"| prefill | 4 | {v16['total_ms'] / 1e3:.2f} (" in table
    assert f"| {v16['total_ms'] / v8['total_ms']:.2f}x |" in table
    qwen = next(r for r in base["rows"] if r["model"] == "qwen2_vl")
    assert "| the 1,024-frame prefill >= 6x faster than Qwen2-VL in bf16 | - | not measured |" in table  # 4 frames
    assert qwen["precision"] == "fp32"


def test_fp8_column_of_the_h100_call() -> None:
    """The committed H100 call (docs/results/fp8_speed_h100.md) re-rendered from its two JSONs: the same table."""
    results = Path(__file__).parents[2] / "docs" / "results"
    bf16, fp8 = (json.loads((results / f"efficiency_h100_{name}.json").read_text()) for name in ("fp8_bf16", "fp8"))
    table = fp8_markdown(bf16, fp8)
    assert table == (results / "fp8_speed_h100.md").read_text()
    assert "| train | 1024 | 8.90 (2.01 / 6.89) | 10.46 (2.06 / 8.39) | 0.85x |" in table
    assert "| the hour prefilled in <= 9 s with FP8 | 12.51 s | NOT met |" in table


def test_points_profiled_beside_their_timing(tmp_path: Path) -> None:
    assert vamba_main([*TINY, "points=[vamba:prefill:4,vamba:train:4]", "profile=true", f"out={tmp_path}",
                       "tag=p"]) == 0
    rows = json.loads((tmp_path / "efficiency_p.json").read_text())["rows"]
    assert [r["profile"] for r in rows] == ["profile_p_vamba_prefill_4.txt", "profile_p_vamba_train_4.txt"]
    table = (tmp_path / "profile_p_vamba_train_4.txt").read_text()
    assert table.startswith("vamba:train:4 (") and "cpu_time_total" in table
    assert "autograd::engine::evaluate_function" in table  # the backward is in the record
    with pytest.raises(SystemExit, match="profile=true profiles the points"):  # never ignored without a word
        vamba_main([*TINY, "num_frames=[2]", "profile=true", f"out={tmp_path}", "tag=q"])
