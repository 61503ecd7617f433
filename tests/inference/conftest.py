"""Fixtures of the inference tests: a small synthetic data set (real mp4 files, LVBench layout, tokenizer) and
a tiny VAMBA checkpoint saved with that tokenizer, shared by the session."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.models.vamba_tiny import MAMBA, TEXT, VISION
from vamba.data.synth import SynthConfig, generate
from vamba.models import VambaConfig, VambaForConditionalGeneration


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
    text = dict(TEXT, vocab_size=len(tokenizer), eos_token_id=eos, bos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id)
    ids = {f"{name}_token_id": tokenizer.convert_tokens_to_ids(f"<|{name}|>")
           for name in ("vision_start", "vision_end", "image_pad", "video_pad")}
    ids["image_token_id"], ids["video_token_id"] = ids.pop("image_pad_token_id"), ids.pop("video_pad_token_id")
    model = VambaForConditionalGeneration(VambaConfig(text_config=text, vision_config=dict(VISION),
                                                      vision_mamba_mixer_config=dict(MAMBA), **ids)).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny-vamba"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
