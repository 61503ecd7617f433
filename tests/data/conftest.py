"""Fixtures of the data tests: one small synthetic data set (real mp4/png files) shared by the session."""
from __future__ import annotations

from pathlib import Path

import pytest

from vamba.data.synth import SynthConfig, generate


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(out=str(out), num_videos=6, num_images=4, num_bench_videos=3, min_frames=16,
                         max_frames=24, seed=0))
    return out


@pytest.fixture(scope="session")
def tokenizer(synth_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(synth_dir / "tokenizer"))


@pytest.fixture(scope="session")
def video_path(synth_dir: Path) -> Path:
    return synth_dir / "videos" / "video_00000.mp4"
