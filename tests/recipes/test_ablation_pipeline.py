"""The full-scale ablation pipeline (vamba.recipes.ablation_pipeline) at toy scale: real `vamba train` / `vamba eval`
processes on the demo's synthetic data and a tiny converted Qwen2-VL, the scripts it writes for torchrun and SLURM."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.conftest import compose_config
from vamba.recipes import demo
from vamba.recipes.ablation_pipeline import plan, run_pipeline
from vamba.recipes.config import validate_pipeline
from vamba.training.config import ConfigError

DEMO_TOY = ["demo.num_videos=4", "demo.num_images=2", "demo.num_mc_videos=4", "demo.num_bench_videos=4",
            "demo.teacher_steps=1", "demo.batch_size=2", "demo.frame_size=56", "demo.data_workers=1",
            "logging.progress=false", "model.tiny.hidden_size=32", "model.tiny.intermediate_size=64",
            "model.tiny.vision_embed_dim=16"]
ARMS = ["cross_attn_init=self_attn", "cross_attn_init=random"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> dict[str, Path]:
    """The demo's synthetic data (an LVBench-layout benchmark included) and a tiny Qwen2-VL: the pipeline's 'own'
    model, data and benchmark."""
    out = tmp_path_factory.mktemp("source")
    cfg = compose_config("experiment=demo", f"output_dir={out}", *DEMO_TOY)
    data = demo.write_data(cfg, out / "data")
    return {**data, "teacher": demo.train_teacher(cfg, data, out / "teacher")}


def toy_overrides(source: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """The planning command line (what `vamba train` would be given) and the toy stages' settings."""
    return ["experiment=ablation_cross_attn_init", f"output_dir={out}", f"ablation.model={source['teacher']}",
            f"ablation.pretrain_data={source['train'] / 'pretrain.yaml'}",
            f"ablation.sft_data={source['train'] / 'sft.yaml'}", f"ablation.benchmark_data={source['bench']}",
            "ablation.seeds=[0]", "ablation.resamples=200", *extra]


def toy_config(overrides: list[str]):
    """The composed config with the stages shrunk to a tiny CPU model and a few steps (paper_pretrain / paper_sft
    are 7B, ZeRO-3, bf16: the same experiments, overridden as a user would for a smoke run)."""
    cfg = compose_config(*overrides)
    stage = ["model=tiny", "deepspeed=none", "logging=none", "device=cpu", "optim.bf16=false",
             "model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.vision_embed_dim=16",
             "data.num_frames=8", "data.packing=false", "data.num_workers=0", "data.max_pixels=3136",
             "optim.max_steps=2", "optim.global_batch_size=2", "optim.per_device_batch_size=2",
             "logging.save_steps=1", "logging.progress=false"]
    cfg.ablation.pretrain_args = list(stage)
    cfg.ablation.sft_args = list(stage)
    cfg.ablation.eval_args = ["model.device=cpu", "model.dtype=float32", "num_frames=8", "model.max_pixels=3136",
                              "max_new_tokens=4", "progress=false"]
    return cfg


@pytest.mark.slow
def test_local_pipeline_trains_evaluates_judges_resumes_and_torchrun_continues_it(source, tmp_path) -> None:
    """2 arms x 1 seed through stage 1, stage 2 and an evaluation after stage 2, each a real process; the report;
    a rerun that starts nothing; then the torchrun script, planned for the same output, continues an arm whose
    evaluation was undone (one process over gloo) and skips what is done."""
    out = tmp_path / "abl"
    overrides = toy_overrides(source, out, "ablation.evaluate=[sft]")
    summary = run_pipeline(toy_config(overrides), overrides)
    for arm in ARMS:
        run = out / "runs" / arm / "seed0"
        assert sorted(p.name for p in run.glob("*.done")) == ["eval_sft.done", "pretrain.done", "sft.done"]
        assert (run / "sft" / "final" / "config.json").exists() and not (run / "eval" / "pretrain").exists()
        responses = (run / "eval" / "sft" / "responses.jsonl").read_text().splitlines()
        assert len(responses) == 4
        correct = summary["runs"][f"{arm}/seed0"]["stages"]["sft"]["correct"]
        assert correct == "".join("1" if json.loads(r)["correct"] else "0" for r in responses)
    # stage 2 started from stage 1's model, in its own run directory, with the arm's setting
    sft_run = json.loads((out / "runs" / ARMS[1] / "seed0" / "sft" / "run_info.json").read_text())
    assert "model.cross_attn_init=random" in sft_run["argv"]
    assert f"model.path='{out / 'runs' / ARMS[1] / 'seed0' / 'pretrain' / 'final'}'" in sft_run["argv"]
    # the claim after stage 2, overall and per question type, judged on the paired outcomes
    claims = summary["claims"]
    assert {c["stage"] for c in claims} == {"sft"} and "overall" in {c["group"] for c in claims}
    overall = next(c for c in claims if c["group"] == "overall")
    a, b = (summary["arms"][arm]["stages"]["sft"]["accuracy"][0] for arm in ARMS)
    assert overall["difference"]["estimate"] == pytest.approx(a - b, abs=0.01)
    assert overall["verdict"] in ("reproduced", "contradicted", "inconclusive") and overall["seeds"] == [0]
    markdown = (out / "report.md").read_text()
    assert "| cross-attention init from self-attention: cross_attn_init=self_attn vs cross_attn_init=random" in markdown
    assert "after stage 2, overall | 4 | 1 |" in markdown
    assert json.loads((out / "report.json").read_text())["not_finished"] == []

    # a rerun finds every step done: no process starts (the run directories stay as they are), the report is redone
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/**/*") if p.is_file()}
    run_pipeline(toy_config(overrides), overrides)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/**/*") if p.is_file()} == stamps

    # the evaluation of one arm undone: the report lists it, the torchrun script (one arm, GPUS=1) continues it
    undone = out / "runs" / ARMS[1] / "seed0"
    (undone / "eval_sft.done").unlink()
    shutil.rmtree(undone / "eval" / "sft")
    partial = run_pipeline(toy_config([*overrides, "ablation.step=report"]), [*overrides, "ablation.step=report"])
    assert partial["not_finished"] == [f"{ARMS[1]}/seed0/sft"] and partial["claims"] == []
    planned = [*overrides, "ablation.launcher=torchrun"]
    run_pipeline(toy_config(planned), planned)
    script = out / "launch" / "torchrun.sh"
    env = {**os.environ, "GPUS": "1", "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(script), ARMS[1]], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("done already") == 2  # stage 1 and stage 2 of that arm
    assert (undone / "eval_sft.done").exists() and (undone / "eval" / "sft" / "summary.json").exists()
    weights = undone / "sft" / "final" / "model.safetensors"
    assert weights.stat().st_mtime_ns == stamps[weights]  # stage 2 was not redone
    final = run_pipeline(toy_config([*overrides, "ablation.step=report"]), [*overrides, "ablation.step=report"])
    assert final["not_finished"] == [] and final["runs"] == summary["runs"]  # greedy decoding: the same answers


def test_scripts_hold_every_arm_x_seed_command(tmp_path) -> None:
    """torchrun and SLURM: the plan is written as scripts (nothing runs); each step guarded by its marker."""
    out = tmp_path / "plan"
    base = ["experiment=ablation_cross_attn_init", f"output_dir={out}", "ablation.model=/ckpt/qwen2vl",
            "ablation.pretrain_data=/data/pt.yaml", "ablation.sft_data=/data/sft.yaml",
            "ablation.benchmark_data=/data/LVBench", "ablation.seeds=[0,1]", "ablation.gpus=4"]
    for launcher in ("torchrun", "slurm"):
        overrides = [*base, f"ablation.launcher={launcher}"]
        run_pipeline(compose_config(*overrides), overrides)
    jobs = plan(compose_config(*base), out.resolve())
    assert [(s[0].arm, s[0].seed) for s in jobs] == [(ARMS[0], 0), (ARMS[1], 0), (ARMS[0], 1), (ARMS[1], 1)]
    torchrun = (out / "launch" / "torchrun.sh").read_text()
    sbatch = (out / "launch" / "slurm_array.sbatch").read_text()
    for i, steps in enumerate(jobs):
        assert [s.name for s in steps] == ["pretrain", "eval_pretrain", "sft", "eval_sft"]
        # as bash reads them: the torchrun block of this arm x seed and the SLURM array task i hold its steps, in order
        block = torchrun.split(f"if want {shlex.quote(steps[0].arm)} {steps[0].seed}; then\n", 1)[1].split("\nfi", 1)[0]
        task = sbatch.split(f"\n  {i})\n", 1)[1].split(";;", 1)[0]
        for text in (block, task):
            words = [shlex.split(line) for line in text.splitlines() if line.strip().startswith("step ")]
            assert words == [["step", str(s.marker), *s.argv] for s in steps]
    assert 'torch.distributed.run --standalone --nproc_per_node "$GPUS" -m vamba.cli "$@"' in torchrun
    assert "GPUS=${GPUS:-4}" in torchrun and "#SBATCH --array=0-3" in sbatch and "#SBATCH --gpus-per-node=4" in sbatch
    assert "--rdzv_backend c10d" in sbatch
    # the report repeats the planning command (its launcher left out) with ablation.step=report
    report = '"$PYTHON" -m vamba.cli train ' + shlex.join([*base[:1], *base[2:], f"output_dir={out.resolve()}",
                                                            "ablation.step=report"])
    assert report in torchrun and report in (out / "launch" / "slurm_array.sbatch").read_text()
    submit = (out / "launch" / "submit_slurm.sh").read_text()
    assert "--dependency=afterany:$array" in submit and "ablation.step=report" in submit
    for script in ("torchrun.sh", "slurm_array.sbatch", "submit_slurm.sh"):
        assert subprocess.run(["bash", "-n", str(out / "launch" / script)]).returncode == 0  # valid bash
    first = jobs[0][0]
    assert first.argv[:4] == ("train", "experiment=paper_pretrain", "model.path='/ckpt/qwen2vl'",
                              "data.mixture='/data/pt.yaml'")
    assert "model.cross_attn_init=self_attn" in first.argv and first.argv[-2:] == (
        "seed=0", f"output_dir='{out.resolve() / 'runs' / ARMS[0] / 'seed0' / 'pretrain'}'")
    assert jobs[1][2].argv[1] == "experiment=paper_sft"
    assert f"model.path='{out.resolve() / 'runs' / ARMS[1] / 'seed0' / 'pretrain' / 'final'}'" in jobs[1][2].argv
    assert jobs[1][3].argv == ("eval", "benchmark=lvbench", "data=/data/LVBench",
                               f"model.path={out.resolve() / 'runs' / ARMS[1] / 'seed0' / 'sft' / 'final'}",
                               f"out={out.resolve() / 'runs' / ARMS[1] / 'seed0' / 'eval' / 'sft'}")


def test_stray_training_keys_and_bad_arms_fail_before_any_work(tmp_path) -> None:
    base = ["experiment=ablation_mixer", f"output_dir={tmp_path}", "ablation.model=/m", "ablation.pretrain_data=/p",
            "ablation.sft_data=/s", "ablation.benchmark_data=/b", "ablation.launcher=slurm"]
    with pytest.raises(ConfigError, match="optim.lr=1e-4: the ablation pipeline passes no training key"):
        run_pipeline(compose_config(*base), [*base, "optim.lr=1e-4"])
    with pytest.raises(ConfigError, match=r"ablation.claims\[0\].worse='mixer_none' is not an arm"):
        validate_pipeline(compose_config(*base, "ablation.claims.0.worse=mixer_none"))
    cfg = compose_config(*base)
    cfg.ablation.arms["vision_mixer=none"].sft.append("seed=3")
    with pytest.raises(ConfigError, match="output_dir and seed are the pipeline's"):
        validate_pipeline(cfg)
    with pytest.raises(ConfigError, match="ablation.benchmark_data"):
        validate_pipeline(compose_config(*base[:-2]))
    os.environ["WORLD_SIZE"] = "2"
    try:
        with pytest.raises(ConfigError, match="under torchrun every rank would run the whole pipeline"):
            run_pipeline(compose_config(*base), base)
    finally:
        del os.environ["WORLD_SIZE"]


@pytest.mark.parametrize("experiment", ["ablation_cross_attn_init", "ablation_distill", "ablation_alpha",
                                        "ablation_mixer"])
def test_full_scale_experiments_plan_the_paper_stages(experiment, tmp_path) -> None:
    cfg = compose_config(f"experiment={experiment}", "ablation.model=/m", "ablation.pretrain_data=/p",
                         "ablation.sft_data=/s", "ablation.benchmark_data=/b", "ablation.launcher=slurm")
    validate_pipeline(cfg)
    jobs = plan(cfg, tmp_path)
    assert cfg.ablation.seeds == [0, 1, 2] and len(jobs) == len(cfg.ablation.arms) * 3
    for steps in jobs[:len(cfg.ablation.arms)]:  # seed 0 (the other seeds' commands differ in seed= and folders)
        assert [s.name for s in steps] == ["pretrain", "eval_pretrain", "sft", "eval_sft"]
        # each stage command composes (the arm's settings are valid keys of the paper experiments)
        for step in (steps[0], steps[2]):
            stage = compose_config(*step.argv[1:])
            assert stage.output_dir == str(tmp_path / "runs" / step.arm / f"seed{step.seed}" / step.name)
        pretrain = compose_config(*steps[0].argv[1:])
        if experiment == "ablation_distill":
            assert pretrain.stage.distill.weight == float(steps[0].arm.split("=")[1])
            assert compose_config(*steps[2].argv[1:]).stage.distill.weight == 0.0
        assert pretrain.stage.distill.teacher == "/m" and pretrain.optim.bf16


@pytest.mark.parametrize("argv", [["-m", "experiment=ablation_alpha", "--cfg", "job"],
                                  ["--multirun", "optim.lr=1e-5,2e-5", "--cfg=job"], ["-m", "--info"]])
def test_a_sweep_with_cfg_is_a_message_not_a_traceback(argv, capsys) -> None:
    from vamba.cli import main

    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert "cannot be combined" in err and "without -m" in err and "Traceback" not in err


def test_a_failed_step_ends_its_arm_and_the_command_names_it(tmp_path) -> None:
    """`local`: a step that fails (here stage 1's `vamba train` refuses a misspelt key, in its first second) leaves
    no marker and ends its arm x seed; the others go on; the report lists what did not finish; the command raises
    naming every failure."""
    for name in ("model", "pt.yaml", "sft.yaml", "bench"):
        (tmp_path / name).touch()
    overrides = ["experiment=ablation_alpha", f"output_dir={tmp_path / 'out'}", f"ablation.model={tmp_path / 'model'}",
                 f"ablation.pretrain_data={tmp_path / 'pt.yaml'}", f"ablation.sft_data={tmp_path / 'sft.yaml'}",
                 f"ablation.benchmark_data={tmp_path / 'bench'}", "ablation.seeds=[0]"]
    cfg = compose_config(*overrides)
    cfg.ablation.pretrain_args = ["optim.lrr=1"]
    with pytest.raises(RuntimeError, match=r"2 of 2 arm x seed jobs failed: use_alpha_balancing=true/seed0: pretrain "
                                           r"exited with code [1-9].*use_alpha_balancing=false/seed0: pretrain"):
        run_pipeline(cfg, overrides)
    out = tmp_path / "out"
    assert not list(out.glob("runs/*/seed0/*.done"))
    summary = json.loads((out / "report.json").read_text())
    assert summary["claims"] == [] and len(summary["not_finished"]) == 4  # 2 arms x 2 evaluations
    assert "Not finished yet" in (out / "report.md").read_text()
