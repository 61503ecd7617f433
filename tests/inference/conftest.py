"""Fixtures of the inference tests: a small synthetic data set (real mp4 files, LVBench layout, tokenizer) and
a tiny VAMBA checkpoint saved with that tokenizer, shared by the session."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.models.vamba_tiny import vamba_config
from vamba.data.synth import SynthConfig, generate
from vamba.models import VambaForConditionalGeneration
from vamba.models.presets import special_token_ids


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(out=str(out), num_videos=1, num_images=0, num_bench_videos=3, min_frames=16,
                         max_frames=20, seed=0))
    return out


@pytest.fixture(scope="session")
def tokenizer(synth_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(synth_dir / "tokenizer"))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A tiny random VAMBA (vocabulary and special-token ids of the synthetic tokenizer) saved by save_pretrained,
    with the tokenizer."""
    torch.manual_seed(0)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": tokenizer.pad_token_id}
    model = VambaForConditionalGeneration(vamba_config(len(tokenizer), ids, **special_token_ids(tokenizer))).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny-vamba"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def chat(checkpoint: Path):
    """``VambaChat`` over the tiny checkpoint, float32 on the CPU."""
    from vamba.inference.chat import VambaChat

    return VambaChat.from_pretrained(checkpoint, device="cpu", dtype="float32", piece_frames=4)


@pytest.fixture(scope="module")
def video(chat, synth_dir: Path):
    """8 frames of a real synthetic mp4, encoded by ``chat``."""
    from vamba.data.sampling import FrameSampling

    return chat.encode(synth_dir / "lvbench" / "videos" / "synth0001.mp4", sampling=FrameSampling("uniform", 8))
