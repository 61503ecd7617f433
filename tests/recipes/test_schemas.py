"""The recipes' own schemas: composed through `vamba train`'s Hydra entry, typed and checked like every other key."""
from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from tests.training.conftest import compose_config
from vamba.recipes.config import AblationTrainConfig, DemoTrainConfig, validate_demo
from vamba.training.config import ConfigError, TrainConfig


def test_experiments_select_the_recipe_schemas() -> None:
    assert type(compose_config()) is TrainConfig and not hasattr(compose_config(), "demo")
    assert type(compose_config("experiment=demo")) is DemoTrainConfig
    for experiment in ("mini_ablations", "mini_ablation_distill"):
        assert type(compose_config(f"experiment={experiment}")) is AblationTrainConfig


def test_recipe_keys_are_checked() -> None:
    with pytest.raises(ConfigCompositionException, match="demo.framez"):
        compose_config("experiment=demo", "demo.framez=4")  # a typo in the recipe's section
    with pytest.raises(ConfigCompositionException, match="demo.frames"):
        compose_config("demo.frames=4")  # a plain training run has no demo section
    with pytest.raises(ConfigCompositionException, match="ablation.seeds"):
        compose_config("experiment=demo", "ablation.seeds=[1]")


def test_demo_order_question_is_checked() -> None:
    with pytest.raises(ConfigError, match="demo.order_question='when'"):
        validate_demo(compose_config("experiment=demo", "demo.order_question=when"))
    assert compose_config("experiment=demo").demo.order_question == "colour"
    assert compose_config("experiment=mini_ablations").demo.order_question == "shapes"  # as measured
