"""A tiny real VAMBA checkpoint for the evaluation tests that run a model (built once per session), and a way
to give a copy of it another ``generation_config.json``, as a released checkpoint carries one."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.models.vamba_tiny import vamba_config

# Text the forced replies are made of, so the tiny tokenizer has tokens for it.
CORPUS = ("B fits the video best, so the option is ", "The answer is B. C D", "B C")


@pytest.fixture(scope="session")
def eval_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny VAMBA saved by ``save_pretrained`` with a tiny Qwen2-style tokenizer (eos ``<|im_end|>``)."""
    from vamba.data.tiny_tokenizer import build_tiny_tokenizer
    from vamba.models import VambaForConditionalGeneration

    path = tmp_path_factory.mktemp("eval-ckpt") / "tiny-vamba"
    tokenizer = build_tiny_tokenizer(path, CORPUS)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": tokenizer.pad_token_id}
    torch.manual_seed(0)
    model = VambaForConditionalGeneration(vamba_config(len(tokenizer), ids)).eval()
    model.save_pretrained(path)
    return path


def with_generation_config(checkpoint: Path, out: Path, **settings) -> Path:
    """A copy of ``checkpoint`` whose ``generation_config.json`` holds ``settings`` (transformers' own class)."""
    from transformers import GenerationConfig

    shutil.copytree(checkpoint, out)
    (out / "generation_config.json").unlink(missing_ok=True)
    GenerationConfig(**settings).save_pretrained(out)
    return out
