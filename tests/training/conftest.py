"""Real configs (composed by Hydra from configs/), real synthetic mp4 data, tiny models."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from vamba.recipes import RECIPES
from vamba.training.cli import CONFIG_DIR
from vamba.training.config import TrainConfig, from_dictconfig, register

# A model small enough for a few CPU steps in about a second.
TINY = ["model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.num_heads=2",
        "model.tiny.num_kv_heads=1", "model.tiny.vision_depth=1", "model.tiny.vision_embed_dim=16",
        "model.tiny.mamba_d_state=8", "model.tiny.mamba_headdim=8", "model.tiny.mamba_chunk_size=16"]


def compose_config(*overrides: str) -> TrainConfig:
    """``vamba train`` config for ``overrides`` exactly as the CLI composes it (schemas, the recipes' included, + YAML
    groups)."""
    register({name: recipe.schema for name, recipe in RECIPES.items()})
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    return from_dictconfig(cfg)


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> Path:
    """A small synthetic set (real H.264 videos, images, captions, tokenizer): ~5 s once per session."""
    from vamba.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(out=str(out), num_videos=12, num_images=8, num_bench_videos=3, min_frames=16,
                         max_frames=24, seed=0))
    return out


@pytest.fixture
def train_overrides(synth, tmp_path) -> list[str]:
    """Overrides for a tiny, deterministic CPU run on the synthetic set."""
    return [f"data.mixture={synth / 'mixture.yaml'}", f"data.tokenizer={synth / 'tokenizer'}", "data.num_frames=4",
            f"output_dir={tmp_path / 'run'}", "device=cpu", "optim.per_device_batch_size=2",
            "optim.global_batch_size=2", "optim.lr=1e-3", "optim.warmup_ratio=0", "logging.progress=false",
            "logging.logging_steps=1", *TINY]
