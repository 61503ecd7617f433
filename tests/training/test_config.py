"""Config validation: every group option composes; typos, wrong types and missing paths fail at start."""
from __future__ import annotations

import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from tests.training.conftest import compose_config
from vamba.training.cli import CONFIG_DIR
from vamba.training.cli import main as train_main
from vamba.training.config import ConfigError, OptimConfig, gradient_accumulation, validate
from vamba.training.params import TRAINABLE

# Keys the paper experiments leave to the user (???), filled for the composition check.
FILL = ["model.path=/ckpt/qwen2vl", "data.mixture=/data/mix.yaml"]


@pytest.mark.parametrize("group", ["model", "data", "stage", "deepspeed", "fsdp", "parallel", "logging", "debug"])
def test_every_group_option_composes(group: str) -> None:
    options = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
    assert options
    for option in options:
        cfg = compose_config(f"{group}={option}", *FILL)
        assert cfg.output_dir


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes(experiment: str) -> None:
    cfg = compose_config(f"experiment={experiment}", *FILL)
    if experiment.startswith("paper"):
        assert cfg.optim.bf16 and cfg.deepspeed["zero_optimization"]["stage"] == 3
        assert cfg.optim.warmup_ratio == 0.03 and cfg.optim.weight_decay == 0.01 and cfg.optim.scheduler == "cosine"


def test_stage_files_show_the_stage_table() -> None:
    """configs/stage/<stage>.yaml show users what a stage trains; the one table is vamba.training.params.TRAINABLE
    (also read by StageConfig's default, the demo and the benchmarks): the files must not drift from it."""
    assert {p.stem for p in (CONFIG_DIR / "stage").glob("*.yaml")} == set(TRAINABLE)
    for stage, patterns in TRAINABLE.items():
        shown = OmegaConf.load(CONFIG_DIR / "stage" / f"{stage}.yaml")
        assert shown.name == stage and list(shown.trainable) == list(patterns), stage
        assert compose_config(f"stage={stage}").stage.trainable == list(patterns)


def test_paper_settings() -> None:
    pre = compose_config("experiment=paper_pretrain", *FILL)
    sft = compose_config("experiment=paper_sft", *FILL)
    assert (pre.optim.lr, pre.optim.global_batch_size, pre.stage.name) == (1e-5, 16, "pretrain")
    assert (sft.optim.lr, sft.optim.global_batch_size, sft.stage.name) == (5e-6, 32, "sft")
    assert pre.stage.distill.teacher == "/ckpt/qwen2vl" and pre.stage.distill.weight > 0
    assert pre.model.gradient_checkpointing and pre.stage.trainable == list(TRAINABLE["pretrain"])


def test_unknown_key_fails() -> None:
    with pytest.raises(ConfigCompositionException) as e:
        compose_config("optim.lrr=1e-4")
    assert isinstance(e.value.__cause__, ConfigKeyError | ConfigAttributeError)
    assert "Key 'lrr' not in 'OptimConfig'" in str(e.value.__cause__)


def test_wrong_type_fails() -> None:
    with pytest.raises(ConfigCompositionException) as e:
        compose_config("optim.lr=fast")
    assert isinstance(e.value.__cause__, ValidationError)


def test_unknown_group_option_fails() -> None:
    with pytest.raises(ConfigCompositionException, match="zero4"):
        compose_config("deepspeed=zero4")


def test_required_value_fails() -> None:
    with pytest.raises(ConfigError, match="required value.*data.mixture"):
        compose_config("experiment=paper_pretrain", "model.path=/ckpt")  # image_captions' mixture is ???


def test_large_model_needs_a_checkpoint(train_overrides) -> None:
    untiny = [o for o in train_overrides if not o.startswith("model.tiny.")]
    cfg = compose_config(*untiny, "model=vamba_qwen2vl_7b")
    with pytest.raises(ConfigError, match="model.path is required for the 7b model"):
        validate(cfg)
    validate(compose_config(*untiny, "model=vamba_qwen2vl_7b", "model.allow_random_init=true"))
    with pytest.raises(ConfigError, match=r"model.tiny.hidden_size, .* set, but model.size=7b: model.tiny applies to "
                                          r"model.size=tiny only"):  # they were ignored without a word
        validate(compose_config(*train_overrides, "model=vamba_qwen2vl_7b", "model.allow_random_init=true"))


def test_missing_path_fails(train_overrides) -> None:
    cfg = compose_config(*train_overrides, "data.mixture=/nonexistent/mixture.yaml")
    with pytest.raises(ConfigError, match="data.mixture='/nonexistent/mixture.yaml': no such file"):
        validate(cfg)


def test_synthetic_tokenizer_beside_a_checkpoint_names_the_fix(synth, tmp_path, monkeypatch) -> None:
    """The default data=synthetic group's relative tokenizer, left in place when a checkpoint is given (the old
    stage-1 command of docs/training.md), says how to use the checkpoint's own tokenizer."""
    monkeypatch.chdir(tmp_path)
    cfg = compose_config(f"model.path={tmp_path}", f"data.mixture={synth / 'mixture.yaml'}", f"output_dir={tmp_path}")
    with pytest.raises(ConfigError, match="data.tokenizer='data/synthetic/tokenizer'.*data=image_captions.*"
                                          "data.tokenizer=null"):
        validate(cfg)


@pytest.mark.parametrize("overrides, message", [
    (["stage.distill.weight=1"], "needs stage.distill.teacher"),
    (["stage.distill.weight=1", "stage.distill.source=cache"], "needs stage.distill.cache_dir"),
    (["stage.distill.weight=1", "stage.distill.teacher=/no/teacher"], "stage.distill.teacher='/no/teacher'"),
    (["stage.distill.weight=-1"], "lambda must be >= 0"),
    (["stage.name=finetune"], "stage.name='finetune'"),
    (["model.size=13b"], "model.size='13b'"),
    (["model.vision_attention=fast"], "model.vision_attention='fast'"),
    (["model.fp8=e4m3"], "model.fp8='e4m3'"),
    (["data.pixel_dtype=float16"], "data.pixel_dtype='float16'"),
    (["logging.report_to=[mlflow]"], "logging.report_to='mlflow'"),
    (["stage.trainable=[]"], "nothing would train"),
    (["optim.warmup_ratio=1.5"], "warmup_ratio"),
    (["parallel.context_parallel_size=0"], "parallel.context_parallel_size=0"),
    (["parallel.decode=half"], "parallel.decode='half'"),
    (["data.val_fraction=1.5"], "data.val_fraction=1.5: must be in"),
    (["data.val_fraction=0.1", "data.val_mixture=/v.yaml"], "both set"),
    (["data.val_mixture=/no/val.yaml"], "data.val_mixture='/no/val.yaml': no such file"),
    (["logging.eval_steps=-1"], "logging.eval_steps=-1"),
    (["logging.save_steps=-1"], "logging.save_steps=-1"),
    (["logging.save_steps=0", "data.val_fraction=0.1"], "set logging.eval_steps"),
    (["parallel.context_parallel_size=2", "model.vision_mixer=selective_scan"], "supports model.vision_mixer=mamba2"),
    (["parallel.context_parallel_size=2", "stage.distill.weight=1", "stage.distill.teacher=/t"], "source=cache"),
    (["stage=sft", "stage.lora.enable=true", "deepspeed=zero3"], "stage.lora.enable=true with deepspeed ZeRO-3"),
])
def test_bad_values_fail(train_overrides, overrides, message) -> None:
    cfg = compose_config(*train_overrides, *overrides)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        validate(cfg)


def test_gradient_accumulation() -> None:
    assert gradient_accumulation(OptimConfig(global_batch_size=32, per_device_batch_size=2), world_size=4) == 4
    with pytest.raises(ConfigError, match="not a multiple"):
        gradient_accumulation(OptimConfig(global_batch_size=16, per_device_batch_size=3), world_size=1)
    # context parallelism: a CP group shares its batches, the data-parallel size is world / CP
    assert gradient_accumulation(OptimConfig(global_batch_size=8, per_device_batch_size=1), 8, 4) == 4
    with pytest.raises(ConfigError, match="does not divide the world size 6"):
        gradient_accumulation(OptimConfig(global_batch_size=8, per_device_batch_size=1), 6, 4)


@pytest.mark.parametrize("added", ["+optim.lrr=1", "++optim.lrr=1", "+model.tiny.widht=3", "+lrr=1"])
def test_keys_added_with_plus_are_checked_against_the_schema(train_overrides, capsys, added) -> None:
    # Hydra adds a `+key` even to a typed node; `vamba train` must refuse it as it refuses `optim.lrr=1`
    assert train_main([*train_overrides, added]) == 2
    key = added.lstrip("+").split("=")[0]
    assert f"vamba train: unknown key {key}" in capsys.readouterr().err


# Facts read from the released scripts (TIGER-AI-Lab/Vamba), the flags each passes to train/train_vamba.py.
RELEASED = {
    # scripts/pretrain_vamba.sh
    "paper_pretrain": {"global_batch_size": 16, "learning_rate": 1e-5, "lr_scheduler_type": "cosine",
                       "warmup_ratio": 0.03, "weight_decay": 0.01, "bf16": True, "tf32": True,
                       "gradient_checkpointing": True, "num_train_epochs": 1, "per_device_train_batch_size": 1,
                       "max_img_seq_len": 120000, "max_txt_seq_len": 124000, "save_steps": 1000,
                       "save_total_limit": 10, "logging_steps": 1, "zero_stage": 3,  # accelerate_config_zero3.yaml
                       "trainable_modules": "cross_attn,vision_mixer,alpha"},
    # scripts/sft_vamba.sh
    "paper_sft": {"global_batch_size": 32, "learning_rate": 5e-6, "lr_scheduler_type": "cosine",
                  "warmup_ratio": 0.03, "weight_decay": 0.01, "bf16": True, "tf32": True,
                  "gradient_checkpointing": True, "num_train_epochs": 1, "per_device_train_batch_size": 1,
                  "max_img_seq_len": 120000, "max_txt_seq_len": 124000, "save_steps": 100,
                  "save_total_limit": 3, "logging_steps": 1, "zero_stage": 3,
                  "trainable_modules": "visual.merger,model"},
}


@pytest.mark.parametrize("experiment", sorted(RELEASED))
def test_paper_experiments_resolve_to_the_released_values(experiment: str, train_overrides: list[str]) -> None:
    """Each paper experiment, composed by Hydra, holds the released script's values; its trainable patterns pick
    exactly the parameters the released substring rule (``any(m in name for m in trainable_modules)``,
    train/train_vamba.py load_model) picks, on a real model's names; gradient checkpointing is non-reentrant."""
    from vamba.models.names import matches_any
    from vamba.training.build import build_model, load_tokenizer

    r = RELEASED[experiment]
    cfg = compose_config(f"experiment={experiment}", *FILL)
    o = cfg.optim
    assert (o.global_batch_size, o.lr, o.scheduler, o.warmup_ratio, o.weight_decay, o.bf16, o.tf32, o.epochs,
            o.per_device_batch_size) == (r["global_batch_size"], r["learning_rate"], r["lr_scheduler_type"],
                                         r["warmup_ratio"], r["weight_decay"], r["bf16"], r["tf32"],
                                         r["num_train_epochs"], r["per_device_train_batch_size"])
    assert cfg.model.gradient_checkpointing is r["gradient_checkpointing"]
    assert (cfg.data.max_img_seq_len, cfg.data.max_text_tokens) == (r["max_img_seq_len"], r["max_txt_seq_len"])
    assert (cfg.logging.save_steps, cfg.logging.save_total_limit, cfg.logging.logging_steps) == \
        (r["save_steps"], r["save_total_limit"], r["logging_steps"])
    assert cfg.deepspeed["zero_optimization"]["stage"] == r["zero_stage"]
    # the same trainable parameters, on the names of a (tiny) model built with this stage's checkpointing
    tiny = compose_config(*train_overrides, f"stage={cfg.stage.name}", f"stage.trainable=[{','.join(cfg.stage.trainable)}]",
                          "model.gradient_checkpointing=true")
    model = build_model(tiny, load_tokenizer(tiny))
    names = [n for n, _ in model.named_parameters()]
    released = {n for n in names if any(m in n for m in r["trainable_modules"].split(","))}
    assert released and {n for n in names if matches_any(n, cfg.stage.trainable)} == released
    funcs = [m._gradient_checkpointing_func for m in model.modules() if getattr(m, "gradient_checkpointing", False)
             and hasattr(m, "_gradient_checkpointing_func")]
    assert funcs and all(f.keywords == {"use_reentrant": False} for f in funcs)



def test_keys_added_with_plus_are_refused_after_composition_too() -> None:
    # the check after composition, for a config composed without the command line's check (tests, sweeps)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) optim.lrr: not in the schema"):
        compose_config("+optim.lrr=1")


@pytest.mark.parametrize("argv, message", [
    (["optim.lrr=1e-4"], "unknown key optim.lrr; did you mean optim.lr? valid keys of optim: optim.lr "),
    (["experiment=demo", "demo.framez=4"], "unknown key demo.framez; did you mean demo.frame_size?"),
    (["data.num_frame=4"], "did you mean data.num_frames?"),
])
def test_a_typo_names_the_closest_key_not_hydras_plus_advice(argv, message, capsys) -> None:
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "+optim" not in err and "append" not in err


def test_demo_frames_is_the_old_spelling_of_demo_num_frames(capsys) -> None:
    from vamba.recipes import RECIPES
    from vamba.training.overrides import check

    schemas = {name: recipe.schema for name, recipe in RECIPES.items()}
    assert check(["experiment=demo", "demo.frames=4"], "train", CONFIG_DIR, schemas) == [
        "experiment=demo", "demo.num_frames=4"]
    assert "vamba train: demo.frames=4 is deprecated; write demo.num_frames=4" in capsys.readouterr().err



def test_a_logging_backend_that_is_not_installed_fails_before_anything_is_built(train_overrides, capsys,
                                                                                 monkeypatch) -> None:
    """logging=tensorboard without the package used to fail in the Trainer, after the model, teacher and data were
    built; now `vamba train` exits 2 at validation with the install line."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed, whatever this environment has
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(SystemExit) as e:
        train_main([*train_overrides, "logging=tensorboard", "optim.max_steps=1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'pip install -e ".[train]"' in err and "logging.report_to=tensorboard" in err, err


@pytest.mark.parametrize("env, message", [
    ({"WANDB_MODE": "onlin"}, "WANDB_MODE='onlin': choose one of"),
    ({"WANDB_MODE": "online"}, "WANDB_MODE=online but no W&B API key"),
])
def test_wandb_mode_and_key_are_checked(train_overrides, tmp_path, monkeypatch, env, message) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    monkeypatch.delenv("NETRC", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = compose_config(*train_overrides, "logging=wandb")
    if not _wandb_installed():
        pytest.skip("wandb is not installed")
    with pytest.raises(ConfigError, match=message):
        validate(cfg)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    if env["WANDB_MODE"] == "online":
        validate(cfg)


def _wandb_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("wandb") is not None


@pytest.mark.slow
def test_a_sweep_names_each_job_folder_by_its_values_and_says_where_it_goes(train_overrides, tmp_path) -> None:
    """`vamba train -m`: job folders were numbered 0..N with Hydra's launch lines hidden; now each is named by its
    swept values (paths left out) and announced on stderr."""
    import os
    import subprocess
    import sys

    overrides = [o for o in train_overrides if not o.startswith("output_dir=")]
    env = {**os.environ, "PYTHONPATH": str(CONFIG_DIR.parent), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "vamba.cli", "train", "-m", *overrides, "optim.lr=1e-3,2e-3",
                           "optim.max_steps=1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.name for p in (tmp_path / "runs" / "sweep").iterdir() for p in p.iterdir() if p.is_dir())
    assert len(jobs) == 2 and jobs[0].startswith("0_") and "optim.lr=0.001" in jobs[0] and "optim.lr=0.002" in jobs[1]
    assert "/" not in "".join(jobs) and "data.mixture" not in jobs[0]
    assert all(list((tmp_path / "runs" / "sweep").glob(f"*/{job}/final")) for job in jobs)
    assert proc.stderr.count("sweep job ") == 2 and f"-> {tmp_path}" in proc.stderr

    # with output_dir given, the jobs go there (they went to runs/sweep/ without a word)
    proc = subprocess.run([sys.executable, "-m", "vamba.cli", "train", "-m", *overrides, "optim.lr=1e-3,2e-3",
                           "optim.max_steps=1", "output_dir=mine"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == [*jobs, "multirun.yaml"]
    assert len(list((tmp_path / "runs" / "sweep").iterdir())) == 1  # the first sweep's folder only


def test_swept_keys_are_the_sweeps_not_the_lists() -> None:
    from vamba.training.cli import swept_keys

    argv = ["-m", "optim.lr=1e-5,2e-5", "stage.trainable=[a.*,b.*]", "seed=range(3)", "+x=1", "model.path=/a,/b",
            "data.num_frames=choice(8,16)"]
    assert swept_keys(argv) == ["optim.lr", "seed", "model.path", "data.num_frames"]


def test_cfg_job_before_the_overrides_prints_the_config_with_them(capsys) -> None:
    """docs/training.md's `vamba train experiment=X --cfg job key=value` failed: Hydra's parser took the overrides
    after `--cfg job` as unrecognised arguments."""
    assert train_main(["experiment=paper_pretrain", "--cfg", "job", "model.path=/ckpt/x", "data.mixture=/d/y.yaml"]) == 0
    printed = capsys.readouterr().out
    assert "path: /ckpt/x" in printed and "mixture: /d/y.yaml" in printed


def test_model_size_must_fit_the_checkpoint(train_overrides, tmp_path) -> None:
    """The size sets a converted checkpoint's new Mamba-2 blocks: a 7B Qwen2-VL under the default model.size=tiny
    (or tiny dimensions other than the checkpoint's) is an error naming the key to set, before anything is built."""
    import json

    dims = compose_config(*train_overrides).model.tiny
    seven = tmp_path / "qwen2vl-7b"
    seven.mkdir()
    (seven / "config.json").write_text(json.dumps({"model_type": "qwen2_vl", "hidden_size": 3584,
                                                   "num_hidden_layers": 28}))
    with pytest.raises(ConfigError, match=rf"hidden_size 3584, num_hidden_layers 28, but model.tiny.hidden_size="
                                          rf"{dims.hidden_size}, model.tiny.num_layers={dims.num_layers} .*"
                                          r"use model.size=7b"):
        validate(compose_config(*train_overrides, f"model.path={seven}"))
    untiny = [o for o in train_overrides if not o.startswith("model.tiny.")]
    with pytest.raises(ConfigError, match=r"hidden_size 3584, but model.size=2b gives 1536"):
        validate(compose_config(*untiny, f"model.path={seven}", "model.size=2b"))
    validate(compose_config(*untiny, f"model.path={seven}", "model.size=7b"))
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    (tiny / "config.json").write_text(json.dumps({"model_type": "vamba", "text_config": {
        "hidden_size": dims.hidden_size, "num_hidden_layers": dims.num_layers}}))
    validate(compose_config(*train_overrides, f"model.path={tiny}"))
    with pytest.raises(ConfigError, match=rf"num_hidden_layers {dims.num_layers}, but model.tiny.num_layers=7"):
        validate(compose_config(*train_overrides, f"model.path={tiny}", "model.tiny.num_layers=7"))
    # its Mamba-2 blocks too: the weights would not fit (d_state, headdim) or the scan would run another chunk size
    (tiny / "config.json").write_text(json.dumps({"model_type": "vamba", "text_config": {
        "hidden_size": dims.hidden_size, "num_hidden_layers": dims.num_layers}, "vision_mamba_mixer_config": {
        "d_state": dims.mamba_d_state, "headdim": dims.mamba_headdim, "chunk_size": dims.mamba_chunk_size}}))
    validate(compose_config(*train_overrides, f"model.path={tiny}"))
    d_state, chunk = dims.mamba_d_state * 2, dims.mamba_chunk_size * 2
    with pytest.raises(ConfigError, match=rf"Mamba-2 blocks with d_state {dims.mamba_d_state}, but model.tiny."
                                          rf"mamba_d_state={d_state}; chunk_size .*model.tiny.mamba_chunk_size={chunk}"):
        validate(compose_config(*train_overrides, f"model.path={tiny}", f"model.tiny.mamba_d_state={d_state}",
                                f"model.tiny.mamba_chunk_size={chunk}"))
    validate(compose_config(*train_overrides, f"model.path={tiny}", f"model.tiny.mamba_d_state={d_state}",
                            "model.vision_mixer=none"))  # no Mamba-2 blocks are built
    # a released checkpoint's short form leaves the defaults out (d_state 128, headdim 64, chunk_size 256)
    (tiny / "config.json").write_text(json.dumps({"model_type": "qwen2_vl", "hidden_size": dims.hidden_size,
                                                  "num_hidden_layers": dims.num_layers,
                                                  "vision_mamba_mixer_config": {"enable": True}}))
    with pytest.raises(ConfigError, match=rf"d_state 128, but model.tiny.mamba_d_state={dims.mamba_d_state}; "
                                          rf"headdim 64, .*; chunk_size 256, "):
        validate(compose_config(*train_overrides, f"model.path={tiny}"))


def test_a_stage_label_without_its_stage_is_refused(train_overrides) -> None:
    """``stage.name=sft`` alone used to train stage 1's parameters under the label sft."""
    with pytest.raises(ConfigError, match=r"stage.name=sft but stage.trainable is the pretrain stage's.*stage=sft"):
        validate(compose_config(*train_overrides, "stage.name=sft"))
    validate(compose_config(*train_overrides, "stage=sft"))


@pytest.mark.parametrize("override, message", [
    ("optim.lr=fast", "Error merging override optim.lr=fast Value 'fast' of type 'str' could not be converted to Float"),
    ("stage=sfft", "Could not find 'stage/sfft' Available options in 'stage': pretrain sft"),
    ("deepspeed=zero4", "Could not find 'deepspeed/zero4'"),
    ("+deepspeed.foo=1", "is a key added under a group set to none?"),
])
def test_overrides_that_do_not_compose_are_one_line_and_exit_2(override, message, capsys) -> None:
    """Hydra printed these over several lines and exited with 1 (the last one raised an AssertionError)."""
    assert train_main([override]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
