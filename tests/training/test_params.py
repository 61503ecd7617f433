from __future__ import annotations

import pytest
import torch
from torch import nn

from vamba.models.names import matches_any
from vamba.training.params import NO_DECAY_PATTERNS, select_trainable


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


# -- LoRA: the stage YAMLs on a tiny real VAMBA, through PEFT ----------------------------------------------------

_LINEAR = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "cross_attn.q_proj",
           "cross_attn.k_proj", "cross_attn.v_proj", "cross_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
           "mlp.down_proj")


def _lora_stage(*overrides: str):
    """Stage, model and its trainable parameter names after ``apply_stage`` + ``apply_lora``."""
    from tests.models.vamba_tiny import vamba_config
    from tests.training.conftest import compose_config
    from vamba.models import VambaForConditionalGeneration
    from vamba.training.build import apply_lora, apply_stage

    stage = compose_config("data.mixture=unused", "stage.lora.enable=true", "stage.lora.r=2", *overrides).stage
    model = VambaForConditionalGeneration(vamba_config())
    apply_stage(model, stage)
    peft_model, summary = apply_lora(model, stage)
    trainable = {n.removeprefix("base_model.model.") for n, p in peft_model.named_parameters() if p.requires_grad}
    return peft_model, summary, trainable


def _adapters(modules: list[str]) -> set[str]:
    return {f"{m}.lora_{ab}.default.weight" for m in modules for ab in "AB"}


def test_lora_sft_trains_the_adapters_and_nothing_in_full() -> None:
    # The released train_vamba.py: get_peft_model freezes every parameter but the adapters and nothing is added
    # back, whatever trainable_modules said. Adapters on the language model's linear layers (lm_head excluded);
    # layer 1 (the last) has no Mamba-2 adapter: that block feeds nothing.
    model, summary, trainable = _lora_stage("stage=sft")
    modules = [f"model.layers.{i}.{m}" for i in (0, 1) for m in _LINEAR]
    modules += ["model.layers.0.vision_mixer.mixer.in_proj", "model.layers.0.vision_mixer.mixer.out_proj"]
    assert trainable == _adapters(modules)
    assert summary.adapters == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert summary.in_full == {} and summary.adapted_modules == len(modules)
    assert summary.frozen == sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert "nothing trains in full" in str(summary)


def test_lora_pretrain_adapts_only_the_new_modules_and_train_in_full_adds_named_groups() -> None:
    _, summary, trainable = _lora_stage("stage=pretrain", "stage.lora.train_in_full=[visual.merger.*,*.alpha]")
    modules = [f"model.layers.{i}.cross_attn.{p}_proj" for i in (0, 1) for p in "qkvo"]
    modules += ["model.layers.0.vision_mixer.mixer.in_proj", "model.layers.0.vision_mixer.mixer.out_proj"]
    merger = {f"visual.merger.{n}" for n in ("ln_q.weight", "ln_q.bias", "mlp.0.weight", "mlp.0.bias",
                                             "mlp.2.weight", "mlp.2.bias")}
    assert trainable == _adapters(modules) | merger | {"model.layers.0.alpha", "model.layers.1.alpha"}
    assert set(summary.in_full) == {"visual.merger.*", "*.alpha"} and summary.in_full["*.alpha"] == 2


def test_dora_trains_adapters_and_magnitudes_only_and_merges_into_the_plain_weights() -> None:
    # stage.lora.dora (peft's use_dora, the released scripts' LoRA): each adapted linear layer also learns one
    # magnitude per output row; nothing else trains, every DoRA parameter gets a gradient, and merging gives a plain
    # model that computes what the DoRA model computes (final/ holds the merged weights)
    from tests.models.vamba_tiny import video_batch

    model, summary, trainable = _lora_stage("stage=sft", "stage.lora.dora=true")
    modules = [f"model.layers.{i}.{m}" for i in (0, 1) for m in _LINEAR]
    modules += ["model.layers.0.vision_mixer.mixer.in_proj", "model.layers.0.vision_mixer.mixer.out_proj"]
    magnitudes = {f"{m}.lora_magnitude_vector.default.weight" for m in modules}
    assert trainable == _adapters(modules) | magnitudes
    assert summary.adapters == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert summary.in_full == {}
    with torch.no_grad():  # B starts at zero (the DoRA update would be the identity): give it a value
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.1)
    batch = video_batch([6, 5], [[(2, 4, 4)], [(2, 4, 4)]])
    model.train()
    model.gradient_checkpointing_enable()
    model(**batch).loss.backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and not (p.grad is not None and p.grad.any())] == []
    model.eval()
    with torch.no_grad():
        dora_logits = model(**batch, return_logits=True).logits
        merged = model.merge_and_unload()
        assert not any("lora_" in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(merged(**batch, return_logits=True).logits, dora_logits, rtol=1e-4, atol=1e-5)


def test_lora_settings_that_would_train_nothing_or_twice_are_errors() -> None:
    from vamba.training.config import ConfigError

    with pytest.raises(ConfigError, match="stage.lora.target_modules=.*stage.trainable"):
        _lora_stage("stage=sft", "stage.trainable=[visual.merger.*]")
    with pytest.raises(ConfigError, match=r"stage.lora.train_in_full \['model\.\*'\] selects model.layers.0"):
        _lora_stage("stage=sft", "stage.lora.train_in_full=[model.*]")
    with pytest.raises(ConfigError, match=r"train_in_full pattern\(s\) \['merger.\*'\] match no parameter"):
        _lora_stage("stage=sft", "stage.lora.train_in_full=[merger.*]")


def test_stage_summary_counts_what_trains_not_the_frozen_last_mamba_block() -> None:
    # the logged count used to include the last layer's Mamba-2 block, which apply_stage then froze
    from tests.models.vamba_tiny import vamba_config
    from tests.training.conftest import compose_config
    from vamba.models import VambaForConditionalGeneration
    from vamba.training.build import apply_stage

    model = VambaForConditionalGeneration(vamba_config())
    summary = apply_stage(model, compose_config("data.mixture=unused", "stage=pretrain").stage)
    assert summary.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert summary.per_pattern["*.vision_mixer.*"] == sum(
        p.numel() for n, p in model.named_parameters() if n.startswith("model.layers.0.vision_mixer."))


def test_every_lora_parameter_gets_a_gradient_under_gradient_checkpointing() -> None:
    # DDP runs with find_unused_parameters=False: a trainable adapter without a gradient (one on the last, unused
    # Mamba-2 block; one behind a checkpointed layer whose input needs no grad now that the embeddings are frozen)
    # would break it
    from tests.models.vamba_tiny import video_batch

    model, _, _ = _lora_stage("stage=sft", "stage.lora.train_in_full=[visual.merger.*]")
    model.gradient_checkpointing_enable()
    model.train()
    with torch.no_grad():  # B starts at zero, so A would get no gradient in the first step
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.1)
    model(**video_batch([6, 5], [[(2, 4, 4)], [(2, 4, 4)]])).loss.backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and not (p.grad is not None and p.grad.any())] == []
