"""VambaConfig: defaults, round trip, the released config.json, errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import PretrainedConfig

from tests.models.test_vamba_loading import _released_config
from tests.models.vamba_tiny import MAMBA, TEXT, vamba_config
from vamba.models import VambaConfig


def test_defaults_follow_the_released_model():
    config = VambaConfig()
    assert config.use_alpha_balancing and not config.cross_attn_use_layer_norm
    assert not config.cross_attn_use_position_embeddings and config.cross_attn_init == "self_attn"
    mamba = config.mamba_config()
    assert (mamba.d_model, mamba.d_state, mamba.d_conv, mamba.expand, mamba.headdim, mamba.ngroups,
            mamba.chunk_size, mamba.bias, mamba.conv_bias, mamba.norm_eps) == (
        config.text_config.hidden_size, 128, 4, 2, 64, 1, 256, False, True, 1e-5)
    assert mamba.num_layers == config.text_config.num_hidden_layers
    assert config.vision_attention == "auto" and config.vision_compile is False  # fast tower, not compiled


def test_round_trip(tmp_path):
    config = vamba_config(cross_attn_use_layer_norm=True, attention_backend="eager", loss_chunk_size=7,
                          vision_attention="reference", vision_compile=True)
    config.save_pretrained(tmp_path)
    loaded = VambaConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.text_config.hidden_size == TEXT["hidden_size"] and loaded.vision_mamba_mixer_config["d_state"] == 8


def test_released_config_translates():
    config = VambaConfig.from_qwen2_vl_dict(_released_config())
    assert config.model_type == "vamba"
    assert config.text_config.hidden_size == TEXT["hidden_size"]
    assert config.text_config.rope_parameters["mrope_section"] == [2, 3, 3]
    assert config.vision_config.depth == 1 and config.vision_mamba_mixer_config["d_state"] == MAMBA["d_state"]
    assert not hasattr(config, "distill_coeff")


@pytest.mark.parametrize("bad, match", [
    ({"cross_attn_init": "zeros"}, "cross_attn_init"),
    ({"use_alpha_balancing": "yes"}, "must be a bool"),
    ({"attention_backend": "flash"}, "attention_backend"),
    ({"loss_chunk_size": 0}, "loss_chunk_size"),
    ({"vision_attention": "fast"}, "vision_attention"),
    ({"vision_compile": "yes"}, "vision_compile"),
    ({"mamba": {"d_stat": 16}}, "unknown key"),
    ({"mamba": {"norm_before_gate": True}}, "not supported"),
    ({"mamba": {"dt_limit": [0.0, 1.0]}}, "dt_limit"),
    ({"mamba": {"hidden_dim": 32}}, "hidden_dim=32"),
])
def test_bad_options_are_clear_errors(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        vamba_config(**bad)


def _official_full_form() -> dict:
    path = Path(__file__).resolve().parents[1] / "fixtures" / "official_tiny" / "config.full.json"
    return json.loads(path.read_text())


def test_full_form_ignores_every_generic_key_wherever_nested():
    full = _official_full_form()
    assert "add_cross_attention" in full["vision_mamba_mixer_config"]  # the official code's 4.44 full form
    # The generic keys of the installed transformers too (e.g. ones 4.44 did not have), nested in the Mamba config.
    generic = {k: v for k, v in PretrainedConfig().to_dict().items() if k not in ("transformers_version",)}
    full["vision_mamba_mixer_config"].update(generic)
    config = VambaConfig.from_qwen2_vl_dict(full)
    official = VambaConfig.from_qwen2_vl_dict(_official_full_form())
    assert config.vision_mamba_mixer_config == official.vision_mamba_mixer_config
    assert config.vision_mamba_mixer_config["d_state"] == 128


def test_unknown_mamba_key_in_the_full_form_still_fails_naming_it():
    full = _official_full_form()
    full["vision_mamba_mixer_config"]["d_stat"] = 16
    with pytest.raises(ValueError, match=r"vision_mamba_mixer_config: unknown key\(s\) \['d_stat'\]"):
        VambaConfig.from_qwen2_vl_dict(full)
