"""The recipes' own schemas: composed through `vamba train`'s Hydra entry, typed and checked like every other key."""
from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from tests.training.conftest import compose_config
from vamba.recipes.config import AblationTrainConfig, DemoTrainConfig, validate_ablation, validate_demo
from vamba.training.config import ConfigError, TrainConfig


def test_experiments_select_the_recipe_schemas() -> None:
    assert type(compose_config()) is TrainConfig and not hasattr(compose_config(), "demo")
    assert type(compose_config("experiment=demo")) is DemoTrainConfig
    for experiment in ("mini_ablations", "mini_ablation_distill"):
        assert type(compose_config(f"experiment={experiment}")) is AblationTrainConfig


def test_recipe_keys_are_checked() -> None:
    with pytest.raises(ConfigCompositionException, match="demo.framez"):
        compose_config("experiment=demo", "demo.framez=4")  # a typo in the recipe's section
    with pytest.raises(ConfigCompositionException, match="demo.num_frames"):
        compose_config("demo.num_frames=4")  # a plain training run has no demo section
    with pytest.raises(ConfigCompositionException, match="ablation.seeds"):
        compose_config("experiment=demo", "ablation.seeds=[1]")


def test_demo_order_question_is_checked() -> None:
    with pytest.raises(ConfigError, match="demo.order_question='when'"):
        validate_demo(compose_config("experiment=demo", "demo.order_question=when"))
    assert compose_config("experiment=demo").demo.order_question == "colour"
    assert compose_config("experiment=mini_ablations").demo.order_question == "colour"  # as the demo asks it


def test_demo_tasks_are_checked() -> None:
    assert compose_config("experiment=demo").demo.tasks == ["needle", "order", "count"]
    assert compose_config("experiment=mini_ablations").demo.tasks == ["needle", "order", "count", "after"]
    for bad in ("[needle,when]", "[]", "[order,order]"):
        with pytest.raises(ConfigError, match="demo.tasks"):
            validate_demo(compose_config("experiment=demo", f"demo.tasks={bad}"))


@pytest.mark.parametrize("experiment", ["mini_ablations", "mini_ablation_cross_attn_init", "mini_ablation_mixer",
                                        "mini_ablation_distill", "mini_ablation_alpha"])
def test_ablation_claims_name_variants_of_their_sweep(experiment) -> None:
    cfg = compose_config(f"experiment={experiment}")
    validate_ablation(cfg)
    assert cfg.ablation.claims and all(c.better in cfg.ablation.variants and c.worse in cfg.ablation.variants
                                       for c in cfg.ablation.claims)


def test_bad_claims_fail_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"ablation.claims\[0\].worse='mamba1'"):
        validate_ablation(compose_config("experiment=mini_ablation_mixer", "ablation.claims.0.worse=mamba1"))
    with pytest.raises(ConfigError, match=r"ablation.claims\[0\].tasks"):
        validate_ablation(compose_config("experiment=mini_ablation_mixer", "demo.tasks=[needle,order]"))


@pytest.mark.parametrize("argv, key", [
    (["experiment=demo", "debug.profile_steps=[0]"], "debug.profile_steps"),  # a training key of both stages
    (["experiment=demo", "data.pixel_dtype=float16"], "data.pixel_dtype"),
    (["experiment=demo", "optim.lr=0.1"], "the demo sets optim.lr itself (from demo.pretrain_lr"),  # else ignored
    (["experiment=mini_ablation_mixer", "stage.distill.weight=0.5"], "demo.distill_weight"),
    (["experiment=mini_ablation_mixer", "ablation.variants.mixer_none=['model.vision_mixer=none','debug.profile_steps=[0]']"],
     "debug.profile_steps"),  # one variant's override
])
def test_recipe_stage_keys_fail_before_any_work(argv, key, tmp_path, capsys) -> None:
    """A key that `vamba train` would refuse in one of the recipe's stages, or one the demo sets itself (it would be
    ignored), fails the recipe at once (exit 2, the key named), before its data, teacher or run directory exist (it
    used to fail minutes later in stage 1, or train as if it were not given)."""
    import time

    from vamba.cli import main as vamba_main

    out = tmp_path / "run"
    started = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        vamba_main(["train", *argv, f"output_dir={out}"])
    assert e.value.code == 2 and key in capsys.readouterr().err
    assert not out.exists()
    assert time.perf_counter() - started < 60  # the composition only, no data


def test_demo_and_ablation_stage_configs_pass_the_training_checks() -> None:
    from vamba.recipes.ablation import check_ablation
    from vamba.recipes.demo import check_stages

    check_stages(compose_config("experiment=demo"))
    for experiment in ("mini_ablations", "mini_ablation_cross_attn_init", "mini_ablation_mixer",
                       "mini_ablation_distill", "mini_ablation_alpha"):
        assert check_ablation(compose_config(f"experiment={experiment}"))
