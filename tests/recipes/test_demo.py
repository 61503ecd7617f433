"""The demo pipeline end to end at toy sizes (the real sizes run in minutes; see docs/training.md)."""
from __future__ import annotations

import json

import pytest

from tests.training.conftest import compose_config
from vamba.recipes.demo import run_demo


@pytest.mark.slow
def test_demo_pipeline_runs_every_stage(tmp_path, capsys) -> None:
    cfg = compose_config("experiment=demo", f"output_dir={tmp_path / 'demo'}", "demo.num_videos=6",
                         "demo.num_images=4", "demo.num_mc_videos=6", "demo.num_bench_videos=3", "demo.teacher_steps=2",
                         "demo.pretrain_steps=2", "demo.sft_steps=2", "demo.batch_size=2", "logging.progress=false",
                         "model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.vision_embed_dim=16")
    results = run_demo(cfg)
    out = tmp_path / "demo"
    assert set(results) == {"Qwen2-VL teacher (transformer)", "VAMBA (after pretrain + sft)"}
    assert all(r["answered"] == 3 and 0 <= r["accuracy"] <= 100 for r in results.values())
    saved = json.loads((out / "results.json").read_text())
    assert saved["chance"] == 25.0 and saved["questions"] == 3 and saved["seconds"]["total"] > 0
    for stage in ("pretrain", "sft"):
        assert (out / stage / "final" / "model.safetensors").exists()
    pre = [json.loads(line) for line in (out / "pretrain" / "log.jsonl").read_text().splitlines()]
    assert any("distill_loss" in r for r in pre)  # stage 1 ran with the online teacher
    assert "| VAMBA (after pretrain + sft) |" in capsys.readouterr().out
    # a second call finds every stage done and only re-reads the results
    assert run_demo(cfg).keys() == results.keys()
