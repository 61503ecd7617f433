"""The miniature-ablation sweep (vamba.recipes.ablation) end to end at toy sizes."""
from __future__ import annotations

import json
import statistics

import pytest

from tests.training.conftest import compose_config
from vamba.recipes.ablation import run_ablation, variant_configs
from vamba.training.config import ConfigError

TOY = ["demo.num_videos=6", "demo.num_images=4", "demo.num_mc_videos=6", "demo.num_bench_videos=3",
       "demo.teacher_steps=2", "demo.pretrain_steps=2", "demo.sft_steps=2", "demo.batch_size=2",
       "demo.frame_size=56", "logging.progress=false", "model.tiny.hidden_size=32",
       "model.tiny.intermediate_size=64", "model.tiny.vision_embed_dim=16"]


@pytest.mark.slow
def test_sweep_runs_aggregates_and_resumes(tmp_path) -> None:
    cfg = compose_config("experiment=mini_ablation_cross_attn_init", f"output_dir={tmp_path / 'abl'}",
                         "+ablation.variants.mixer_none=['model.vision_mixer=none']",
                         "+ablation.variants.mixer_selective_scan=['model.vision_mixer=selective_scan']",
                         "ablation.seeds=[0,1]", "ablation.workers=2", *TOY)
    summary = run_ablation(cfg)
    out = tmp_path / "abl"
    runs = {name: [json.loads((out / "runs" / name / f"seed{s}" / "result.json").read_text()) for s in (0, 1)]
            for name in ("demo", "cross_attn_random", "mixer_none", "mixer_selective_scan")}
    for name, results in runs.items():
        accs = [r["accuracy"] for r in results]
        mean, std = summary["variants"][name]["accuracy"]
        assert mean == pytest.approx(statistics.fmean(accs)) and std == pytest.approx(statistics.stdev(accs))
        assert all(r["answered"] == 3 and r["loss"]["pretrain"] and r["loss"]["sft"] for r in results)
    # the seed reaches each run: its stage configs record it
    for s in (0, 1):
        assert "seed: " + str(s) in (out / "runs" / "cross_attn_random" / f"seed{s}" / "pretrain" / "config.yaml").read_text()
    final = json.loads((out / "runs" / "mixer_none" / "seed0" / "sft" / "final" / "config.json").read_text())
    assert final["vision_mamba_mixer_config"]["enable"] is False  # no Mamba-2 blocks at all in that variant
    final = json.loads((out / "runs" / "mixer_selective_scan" / "seed0" / "sft" / "final" / "config.json").read_text())
    assert final["vision_mamba_mixer_config"]["enable"] is True and final["vision_mixer_kind"] == "selective_scan"
    assert (out / "ablation.md").read_text().count("| cross_attn_random |") == 1
    for plot in ("loss.png", "accuracy.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "shared" / "teacher_result.json").read_text())["answered"] == 3

    stamp = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/result.json")}
    run_ablation(cfg)  # everything done: nothing re-runs
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/result.json")} == stamp


@pytest.mark.parametrize("override", ["model.cross_atn_init=random", "demo.distill_weight=heavy", "seed"])
def test_bad_variant_overrides_fail_before_any_work(tmp_path, override) -> None:
    cfg = compose_config("experiment=mini_ablations", f"output_dir={tmp_path}", f"+ablation.variants.bad=['{override}']")
    with pytest.raises(ConfigError, match="bad"):
        variant_configs(cfg)


def test_variant_configs_apply_overrides_and_seeds(tmp_path) -> None:
    cfg = compose_config("experiment=mini_ablations", f"output_dir={tmp_path}")
    configs = variant_configs(cfg)
    assert len(configs) == 8 * 3
    assert configs[("cross_attn_random", 2)].model.cross_attn_init == "random"
    assert configs[("cross_attn_random", 2)].seed == 2 and configs[("demo", 0)].model.cross_attn_init == "self_attn"
    assert configs[("lambda_0p1", 1)].demo.distill_weight == 0.1 and configs[("alpha_off", 0)].model.use_alpha_balancing is False
    assert configs[("mixer_selective_scan", 0)].model.vision_mixer == "selective_scan"


@pytest.mark.slow
def test_a_failing_run_is_recorded_and_the_others_aggregated(tmp_path) -> None:
    # headdim 7 does not divide the toy d_inner (64): the variant passes validation and fails inside its run
    cfg = compose_config("experiment=mini_ablation_alpha", f"output_dir={tmp_path}",
                         "+ablation.variants.broken=['model.tiny.mamba_headdim=7']", "ablation.seeds=[0]", *TOY)
    with pytest.raises(RuntimeError, match="1 of 3 ablation runs failed: broken/seed0"):
        run_ablation(cfg)
    summary = json.loads((tmp_path / "ablation.json").read_text())
    assert set(summary["variants"]) == {"demo", "alpha_off"} and "headdim" in summary["failed"]["broken/seed0"]
    broken = tmp_path / "runs" / "broken" / "seed0"
    assert "Traceback" in (broken / "error.txt").read_text() and not (broken / "result.json").exists()
    assert "broken/seed0" in (tmp_path / "ablation.md").read_text()
