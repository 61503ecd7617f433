"""The miniature-ablation sweep (vamba.recipes.ablation) end to end at toy sizes."""
from __future__ import annotations

import json
import os
import signal
import statistics
import threading
import time

import pytest

from tests.training.conftest import compose_config
from vamba.recipes.ablation import run_ablation, variant_configs
from vamba.training.config import ConfigError

TOY = ["demo.num_videos=6", "demo.num_images=4", "demo.num_mc_videos=8", "demo.num_bench_videos=8",
       "demo.teacher_steps=2", "demo.pretrain_steps=2", "demo.sft_steps=2", "demo.batch_size=2",
       "demo.frame_size=56", "logging.progress=false", "model.tiny.hidden_size=32",
       "model.tiny.intermediate_size=64", "model.tiny.vision_embed_dim=16", "ablation.resamples=200"]


@pytest.mark.slow
def test_sweep_evaluates_both_stages_compares_claims_and_resumes(tmp_path) -> None:
    cfg = compose_config("experiment=mini_ablation_mixer", f"output_dir={tmp_path / 'abl'}", "ablation.seeds=[0,1]",
                         "ablation.workers=2", "~ablation.variants.mixer_none",
                         "ablation.claims=[{claim: mixer, better: demo, worse: mixer_selective_scan, tasks: [order]}]",
                         *TOY)
    summary = run_ablation(cfg)
    out = tmp_path / "abl"
    assert summary["questions"]["count"] == 8 and summary["questions"]["per_task"] == {
        "needle": 2, "order": 2, "count": 2, "after": 2}
    for name in ("demo", "mixer_selective_scan"):
        runs = [json.loads((out / "runs" / name / f"seed{s}" / "result.json").read_text()) for s in (0, 1)]
        for stage in ("pretrain", "sft"):
            accs = [r["stages"][stage]["accuracy"] for r in runs]
            mean, std = summary["variants"][name]["stages"][stage]["accuracy"]
            assert mean == pytest.approx(statistics.fmean(accs)) and std == pytest.approx(statistics.stdev(accs))
            for r in runs:  # the per-question outcomes are the recorded answers
                correct = r["stages"][stage]["correct"]
                assert len(correct) == 8 and set(correct) <= {"0", "1"}
                assert 100 * correct.count("1") / 8 == pytest.approx(r["stages"][stage]["accuracy"])
        assert all(r["loss"]["pretrain"] and r["loss"]["sft"] for r in runs)
        assert (out / "runs" / name / "seed0" / "eval" / "pretrain" / "responses.jsonl").exists()
    final = json.loads((out / "runs" / "mixer_selective_scan" / "seed0" / "sft" / "final" / "config.json").read_text())
    assert final["vision_mamba_mixer_config"]["enable"] is True and final["vision_mixer_kind"] == "selective_scan"
    # one claim, two stages, overall + four tasks; the paired difference is the difference of the means
    claims = summary["claims"]
    assert len(claims) == 2 * 5 and {(c["stage"], c["group"]) for c in claims} >= {("pretrain", "overall"),
                                                                                      ("sft", "order")}
    overall = next(c for c in claims if c["stage"] == "sft" and c["group"] == "overall")
    means = {n: summary["variants"][n]["stages"]["sft"]["accuracy"][0] for n in ("demo", "mixer_selective_scan")}
    assert overall["difference"]["estimate"] == pytest.approx(means["demo"] - means["mixer_selective_scan"], abs=0.01)
    assert overall["verdict"] in ("reproduced", "contradicted", "inconclusive") and 0 < overall["mcnemar_p"] <= 1
    markdown = (out / "ablation.md").read_text()
    assert "after stage 1 (LLM frozen), event order" in markdown and "after stage 2, overall" in markdown
    assert "after stage 2, counting" not in markdown  # tasks not named by the claim stay in the JSON only
    for plot in ("loss.png", "accuracy.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "shared" / "teacher_result.json").read_text())["answered"] == 8

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
    assert len(configs) == 7 * 3
    assert configs[("cross_attn_random", 2)].model.cross_attn_init == "random"
    assert configs[("cross_attn_random", 2)].seed == 2 and configs[("demo", 0)].model.cross_attn_init == "self_attn"
    assert configs[("lambda_0p1", 1)].demo.distill_weight == 0.1 and configs[("alpha_off", 0)].model.use_alpha_balancing is False
    assert configs[("mixer_selective_scan", 0)].model.vision_mixer == "selective_scan"
    assert configs[("mixer_none", 0)].demo.tasks == ["needle", "order", "count", "after"]


@pytest.mark.slow
def test_failed_and_killed_runs_are_recorded_and_the_same_command_retries_them(tmp_path) -> None:
    """Three runs: ``demo`` succeeds; ``broken`` raises inside its run (headdim 7 does not divide the toy d_inner
    of 64); ``killed``'s worker process gets SIGKILL, as from the kernel's out-of-memory killer. It cannot finish
    before the kill whatever the timing: its stage-1 checkpoint's config.json is a named pipe nobody writes,
    so the worker blocks when stage 2 reads it. The sweep records both failures and finishes; the same
    command, the pipe removed, runs ``killed`` again and skips ``demo``."""
    cfg = compose_config("experiment=mini_ablation_alpha", f"output_dir={tmp_path}", "ablation.seeds=[0]",
                         "ablation.workers=2", "~ablation.variants.alpha_off", "ablation.claims=[]",
                         "+ablation.variants.broken=['model.tiny.mamba_headdim=7']",
                         "+ablation.variants.killed=['model.use_alpha_balancing=false']", *TOY)
    killed = tmp_path / "runs" / "killed" / "seed0"
    (killed / "pretrain" / "final").mkdir(parents=True)
    os.mkfifo(killed / "pretrain" / "final" / "config.json")
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            run_ablation(cfg)
        except BaseException as e:  # noqa: BLE001 - checked below
            errors.append(e)

    thread = threading.Thread(target=sweep, daemon=True)
    thread.start()
    pid = None
    try:
        deadline = time.monotonic() + 600  # a bound for a broken sweep, not a timing assumption
        while pid is None and thread.is_alive() and time.monotonic() < deadline:
            if (killed / "worker.json").exists():
                pid = json.loads((killed / "worker.json").read_text())["pid"]
            else:
                time.sleep(0.05)
        assert pid is not None, f"the worker never announced itself (sweep errors: {errors})"
        os.kill(pid, signal.SIGKILL)
        thread.join(600)
    finally:
        if pid is None and (killed / "worker.json").exists():  # never leave a worker blocked on the pipe
            os.kill(json.loads((killed / "worker.json").read_text())["pid"], signal.SIGKILL)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError), errors
    assert "2 of 3 ablation runs failed: broken/seed0, killed/seed0" in str(errors[0])
    summary = json.loads((tmp_path / "ablation.json").read_text())
    assert set(summary["variants"]) == {"demo"}
    assert "SIGKILL" in summary["failed"]["killed/seed0"] and str(pid) in summary["failed"]["killed/seed0"]
    assert "headdim" in summary["failed"]["broken/seed0"]
    assert "Traceback" in (tmp_path / "runs" / "broken" / "seed0" / "error.txt").read_text()
    assert "SIGKILL" in (killed / "error.txt").read_text() and not (killed / "result.json").exists()
    markdown = (tmp_path / "ablation.md").read_text()
    assert "killed/seed0" in markdown and "broken/seed0" in markdown

    (killed / "pretrain" / "final" / "config.json").unlink()
    demo_result = tmp_path / "runs" / "demo" / "seed0" / "result.json"
    stamp = demo_result.stat().st_mtime_ns
    with pytest.raises(RuntimeError, match="1 of 3 ablation runs failed: broken/seed0"):
        run_ablation(cfg)
    summary = json.loads((tmp_path / "ablation.json").read_text())
    assert set(summary["variants"]) == {"demo", "killed"} and list(summary["failed"]) == ["broken/seed0"]
    assert (killed / "result.json").exists() and not (killed / "error.txt").exists()
    assert demo_result.stat().st_mtime_ns == stamp  # done runs are not run again
