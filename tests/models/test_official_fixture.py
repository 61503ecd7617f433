"""A checkpoint written by the official VAMBA code (tests/fixtures/official_tiny, see its README) loads through
``VambaForConditionalGeneration.from_pretrained`` and, called with transformers' input names, reproduces the
official fp32 logits and greedy tokens on the CPU."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.doc_examples import ROOT, python_example
from vamba.models import VambaForConditionalGeneration
from vamba.models.configuration import MAMBA_DEFAULTS

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "official_tiny"
INPUT_NAMES = ("input_ids", "pixel_values_videos", "video_grid_thw")


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """Relative Frobenius-norm error ||got - want|| / ||want||."""
    return float((got.double() - want.double()).norm() / want.double().norm())


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "io.safetensors"))


def full_form_checkpoint(root: Path) -> Path:
    """The fixture with its full-form config (config.full.json) as config.json, the same weights."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text((FIXTURE / "config.full.json").read_text())
    (root / "model.safetensors").symlink_to(FIXTURE / "model.safetensors")
    return root


@pytest.fixture(scope="module", params=["diff form", "full form"])
def model(request, tmp_path_factory) -> VambaForConditionalGeneration:
    path = FIXTURE if request.param == "diff form" else full_form_checkpoint(tmp_path_factory.mktemp("full"))
    return VambaForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()


def test_fixture_is_what_its_readme_says(io):
    assert io["input_ids"].shape == (1, 40) and io["video_grid_thw"].tolist() == [[8, 16, 16]]
    assert (io["input_ids"] == 500).sum() == 1 and io["generated"].shape == (1, 48)


def test_both_config_forms_give_the_same_config(tmp_path):
    configs = [VambaForConditionalGeneration.config_class.from_qwen2_vl_dict(json.loads(path.read_text()))
               for path in (FIXTURE / "config.json", FIXTURE / "config.full.json")]
    assert configs[0].to_dict() == configs[1].to_dict()
    # A 4.x diff form leaves out what equals 4.x's defaults: no bos token there, not 5.x's Qwen2 default.
    assert configs[0].text_config.bos_token_id is None and configs[0].text_config.eos_token_id == 510
    # Nothing generic survives into our own config.json (its nested Mamba settings are only the model's own).
    saved = configs[1].to_diff_dict()
    assert set(saved["vision_mamba_mixer_config"]) <= set(MAMBA_DEFAULTS)
    assert not {"add_cross_attention", "torchscript", "_name_or_path", "temperature"} & set(saved)
    assert not {"add_cross_attention", "torchscript", "tie_encoder_decoder"} & set(saved["vision_config"])


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


def test_the_docs_example_reproduces_the_official_outputs(monkeypatch) -> None:
    """docs/model.md's example on this fixture, as printed, from the repository's root: its comments promise the
    official fp32 logits and the official 8 greedy tokens."""
    code = python_example("docs/model.md", "official_tiny")
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    with torch.no_grad():
        exec(compile(code, "docs/model.md", "exec"), scope)
    io = scope["io"]
    assert relative_error(scope["logits"], io["logits_fp32"]) < 1e-4
    assert torch.equal(scope["tokens"], io["generated"])
