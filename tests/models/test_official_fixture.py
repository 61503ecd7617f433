"""A checkpoint written by the official VAMBA code (tests/fixtures/official_tiny, see its README) loads through
``VambaForConditionalGeneration.from_pretrained`` and, called with transformers' input names, reproduces the
official fp32 logits and greedy tokens on the CPU."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vamba.models import VambaForConditionalGeneration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "official_tiny"
INPUT_NAMES = ("input_ids", "pixel_values_videos", "video_grid_thw")


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """Relative Frobenius-norm error ||got - want|| / ||want||."""
    return float((got.double() - want.double()).norm() / want.double().norm())


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "io.safetensors"))


@pytest.fixture(scope="module")
def model() -> VambaForConditionalGeneration:
    return VambaForConditionalGeneration.from_pretrained(FIXTURE, dtype=torch.float32).eval()


def test_fixture_is_what_its_readme_says(io):
    assert io["input_ids"].shape == (1, 40) and io["video_grid_thw"].tolist() == [[8, 16, 16]]
    assert (io["input_ids"] == 500).sum() == 1 and io["generated"].shape == (1, 48)


def test_fp32_logits_and_argmax_match_the_official_forward(model, io):
    assert model.config.vision_start_token_id == 500
    assert (model.generation_config.eos_token_id, model.generation_config.pad_token_id) == (510, 511)
    with torch.no_grad():
        out = model(**{k: io[k] for k in INPUT_NAMES})
        merged = model._vision_tower(io["pixel_values_videos"], io["video_grid_thw"])
    # The merger's output: 3.0e-4 here (CPU, 2026-12-01), the official one having been computed on an H100.
    assert relative_error(merged, io["visual_embeds_fp32"][0]) < 1e-3
    assert relative_error(out.logits, io["logits_fp32"]) < 1e-4
    assert torch.equal(out.logits.argmax(-1), io["logits_fp32"].argmax(-1))


def test_greedy_generate_reproduces_the_official_tokens(model, io):
    with torch.no_grad():
        generated = model.generate(**{k: io[k] for k in INPUT_NAMES}, attention_mask=torch.ones_like(io["input_ids"]),
                                   do_sample=False, max_new_tokens=8)
    assert torch.equal(generated, io["generated"])
