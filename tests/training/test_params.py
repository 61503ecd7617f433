from __future__ import annotations

import pytest
import torch
from torch import nn

from vamba.training.params import NO_DECAY_PATTERNS, matches_any, select_trainable


class _Layer(nn.Module):
    """Parameter names shaped like a VAMBA decoder layer's (real nn modules, tiny)."""

    def __init__(self) -> None:
        super().__init__()
        self.self_attn = nn.Linear(4, 4)
        self.cross_attn = nn.Linear(4, 4)
        self.alpha = nn.Parameter(torch.full((1,), 0.5))
        self.input_layernorm = nn.LayerNorm(4)
        self.vision_mixer = nn.Module()
        self.vision_mixer.A_log = nn.Parameter(torch.zeros(2))
        self.vision_mixer.dt_bias = nn.Parameter(torch.zeros(2))
        self.vision_mixer.in_proj = nn.Linear(4, 8, bias=False)


def _model() -> nn.Module:
    m = nn.Module()
    m.layers = nn.ModuleList([_Layer(), _Layer()])
    return m


def test_select_trainable_counts_and_flags() -> None:
    m = _model()
    summary = select_trainable(m, ["*.cross_attn.*", "*.vision_mixer.*", "*.alpha"])
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert "layers.0.cross_attn.weight" in trainable and "layers.1.vision_mixer.A_log" in trainable
    assert "layers.0.self_attn.weight" not in trainable and "layers.0.input_layernorm.weight" not in trainable
    assert summary.trainable == sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert summary.per_pattern["*.alpha"] == 2


def test_pattern_that_matches_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="cros_attn"):
        select_trainable(_model(), ["*.cros_attn.*"])


def test_no_decay_patterns_cover_ssm_norm_bias_alpha() -> None:
    """The rule the trainer's optimizer groups follow (VambaTrainer.get_decay_parameter_names; tests/training/
    test_train.py checks the groups of a real VambaTrainer)."""
    names = [n for n, _ in _model().named_parameters()]
    plain = {n.split(".", 2)[-1] for n in names if matches_any(n, NO_DECAY_PATTERNS)}
    decay = {n.split(".", 2)[-1] for n in names if not matches_any(n, NO_DECAY_PATTERNS)}
    assert {"alpha", "vision_mixer.A_log", "vision_mixer.dt_bias", "input_layernorm.weight",
            "input_layernorm.bias", "cross_attn.bias"} <= plain
    assert decay == {"self_attn.weight", "cross_attn.weight", "vision_mixer.in_proj.weight"}
