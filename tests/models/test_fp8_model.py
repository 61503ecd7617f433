"""``VambaConfig.fp8``: which layers run in FP8, the same checkpoint keys, the vision tower's and the decoder's
outputs against the unquantised model within FP8's error (the op's exactness: tests/ops/test_fp8.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.models.vamba_tiny import vamba_config, video_batch
from vamba.models import VambaForConditionalGeneration
from vamba.models.fp8 import FP8_MIN_ROWS, FP8Linear, set_fp8


def _model(fp8: str = "none") -> VambaForConditionalGeneration:
    torch.manual_seed(0)
    return VambaForConditionalGeneration(vamba_config(fp8=fp8)).eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_modes_swap_the_linear_classes_and_keep_the_keys():
    plain, fp8 = _model(), _model("all")
    assert plain.state_dict().keys() == fp8.state_dict().keys()
    for (name, a), b in zip(plain.state_dict().items(), fp8.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    kinds = {name: type(m) for name, m in fp8.named_modules() if isinstance(m, nn.Linear)}
    assert kinds["model.layers.0.self_attn.q_proj"] is FP8Linear
    assert kinds["model.layers.1.cross_attn.o_proj"] is FP8Linear
    assert kinds["model.layers.0.mlp.down_proj"] is FP8Linear
    assert kinds["visual.merger.mlp.0"] is FP8Linear
    assert kinds["lm_head"] is nn.Linear  # the logits keep the weights' precision
    set_fp8(fp8, "vision")
    assert type(fp8.model.layers[0].mlp.up_proj) is nn.Linear and type(fp8.visual.merger.mlp[2]) is FP8Linear
    set_fp8(fp8, "none")
    assert not any(isinstance(m, FP8Linear) for m in fp8.modules()) and fp8.config.fp8 == "none"
    with pytest.raises(ValueError, match="fp8 must be one of"):
        set_fp8(fp8, "e4m3")
    with pytest.raises(ValueError, match="VambaConfig.fp8"):
        vamba_config(fp8="bf16")


def test_forward_is_close_to_the_unquantised_model():
    batch = video_batch([40, 28], [[(2, 4, 4)], [(2, 4, 6)]])
    batch.pop("labels")  # the logits, not the chunked loss
    plain = _model()
    with torch.no_grad():
        ref = plain(**batch).logits
        vision_ref = plain._vision_tower(batch["pixel_values"], batch["grid_thw"])
        for mode in ("vision", "all"):
            set_fp8(plain, mode)
            out = plain(**batch).logits
            vision = plain._vision_tower(batch["pixel_values"], batch["grid_thw"])
            assert 0 < _rel(vision, vision_ref) < 0.08, mode  # quantised, and within FP8's error
            assert 0 < _rel(out, ref) < 0.08, mode


def test_decoding_steps_keep_the_weights_precision():
    layer = FP8Linear(32, 16)
    short = torch.randn(FP8_MIN_ROWS - 1, 32)  # a decoding step's rows: the plain product
    torch.testing.assert_close(layer(short), nn.functional.linear(short, layer.weight, layer.bias), rtol=0, atol=0)
    long = torch.randn(FP8_MIN_ROWS, 32)
    assert not torch.equal(layer(long), nn.functional.linear(long, layer.weight, layer.bias))


def test_training_step_gradients_flow_through_fp8():
    batch = video_batch([40], [[(2, 4, 4)]])
    plain, fp8 = _model(), _model("all")
    for m in (plain, fp8):
        m.train()
        m.requires_grad_(False)
        for layer in m.model.layers:  # stage 1's trainable set: cross-attention; the frozen rest passes grad_x
            layer.cross_attn.requires_grad_(True)
        m(**batch).loss.backward()
    ga = torch.cat([p.grad.flatten() for p in plain.parameters() if p.grad is not None])
    gb = torch.cat([p.grad.flatten() for p in fp8.parameters() if p.grad is not None])
    assert ga.shape == gb.shape and 0 < _rel(gb, ga) < 0.15


def test_a_checkpoint_does_not_carry_fp8(tmp_path):
    """A model trained with FP8 layers loads in its weights' precision unless FP8 is asked for again."""
    _model("all").save_pretrained(tmp_path)
    assert '"fp8"' not in (tmp_path / "config.json").read_text()
    assert VambaForConditionalGeneration.from_pretrained(tmp_path).config.fp8 == "none"
    loaded = VambaForConditionalGeneration.from_pretrained(tmp_path, fp8="vision")
    assert loaded.config.fp8 == "vision" and type(loaded.visual.merger.mlp[0]) is FP8Linear
