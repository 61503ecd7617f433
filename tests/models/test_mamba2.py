"""Mamba-2 video block: released layout and init, parity with transformers' Mamba2Mixer, packing, streaming."""
from __future__ import annotations

import math

import pytest
import torch

from vamba.models.mamba2 import Mamba2Block, Mamba2Config, Mamba2Mixer, Mamba2State

TINY = dict(d_model=32, d_state=8, headdim=8, chunk_size=8)  # 8 heads of 8, conv_dim 80


def test_parameter_names_and_shapes_at_released_size():
    with torch.device("meta"):
        block = Mamba2Block(Mamba2Config(d_model=3584))
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    assert shapes == {
        "norm.weight": (3584,),
        "mixer.in_proj.weight": (2 * 7168 + 2 * 128 + 112, 3584),
        "mixer.conv1d.weight": (7168 + 256, 1, 4),
        "mixer.conv1d.bias": (7168 + 256,),
        "mixer.dt_bias": (112,),
        "mixer.A_log": (112,),
        "mixer.D": (112,),
        "mixer.norm.weight": (7168,),
        "mixer.out_proj.weight": (3584, 7168),
    }


def test_released_initialisation():
    config = Mamba2Config(d_model=64, d_state=16, headdim=4, num_layers=4)  # 32 heads
    block = Mamba2Block(config)
    mixer = block.mixer
    A = torch.exp(mixer.A_log)
    assert A.min() >= 1.0 and A.max() <= 16.0 and A.std() > 1.0
    dt = torch.nn.functional.softplus(mixer.dt_bias)
    assert dt.min() >= 1e-3 - 1e-7 and dt.max() <= 0.1 + 1e-7
    assert torch.all(mixer.D == 1) and torch.all(block.norm.weight == 1) and torch.all(mixer.norm.weight == 1)
    # out_proj: PyTorch's default bound 1/sqrt(fan_in), scaled by 1/sqrt(num_layers)
    assert mixer.out_proj.weight.abs().max() <= 1 / math.sqrt(config.d_inner) / 2 + 1e-7
    assert mixer.out_proj.weight.abs().max() > 0.9 / math.sqrt(config.d_inner) / 2
    before = {k: v.clone() for k, v in block.state_dict().items()}
    with torch.no_grad():
        mixer.D.zero_()
    block.reset_parameters()
    assert torch.all(mixer.D == 1) and not torch.equal(before["mixer.A_log"], mixer.A_log)


@pytest.mark.parametrize("ngroups", [1, 2])
def test_mixer_matches_transformers_mamba2(ngroups):
    """transformers' Mamba2Mixer has the same (mamba-ssm) layout: same weights must give the same output."""
    import importlib.util
    import inspect

    from transformers import Mamba2Config as HFConfig
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer as HFMixer

    if importlib.util.find_spec("causal_conv1d") is not None:
        pytest.skip("with causal-conv1d installed, this transformers calls its CUDA kernel on CPU tensors")
    config = Mamba2Config(d_model=32, d_state=8, headdim=8, ngroups=ngroups, chunk_size=8)
    ours = Mamba2Mixer(config).double()
    hf_config = HFConfig(hidden_size=32, num_heads=config.nheads, head_dim=8, state_size=8, n_groups=ngroups, expand=2,
                         chunk_size=8, num_hidden_layers=1, vocab_size=16)
    theirs = HFMixer(hf_config, layer_idx=0).double()
    # The gated norm's class is found through the mixer: its name changed (MambaRMSNormGated -> Mamba2RMSNormGated
    # in 5.25), its place in the mixer did not.
    if ngroups > 1 and "group_size" not in inspect.signature(type(theirs.norm).__init__).parameters:
        pytest.skip("this transformers normalises over all groups at once (fixed in later 5.x); mamba-ssm does not")
    missing = theirs.load_state_dict(ours.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    x = torch.randn(2, 27, 32, dtype=torch.float64)
    expected = theirs(x)
    # NOTE: transformers' torch path runs parts of the scan in float32 whatever the input dtype, so the
    # budget is float32 rounding relative to the output scale.
    torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-5 * expected.abs().max().item())


def test_block_forward_backward_all_parameters():
    block = Mamba2Block(Mamba2Config(**TINY))
    x = torch.randn(2, 21, 32, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    y.square().mean().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_block_residual_structure():
    block = Mamba2Block(Mamba2Config(**TINY))
    x = torch.randn(1, 5, 32)
    torch.testing.assert_close(block(x), x + block.mixer(block.norm(x)))


def test_seq_idx_equals_separate_runs():
    block = Mamba2Block(Mamba2Config(**TINY)).double()
    lengths = [9, 1, 14]
    x = torch.randn(1, sum(lengths), 32, dtype=torch.float64)
    seq = torch.repeat_interleave(torch.arange(3, dtype=torch.int32), torch.tensor(lengths))[None]
    packed = block(x, seq_idx=seq)
    separate = torch.cat([block(part) for part in x.split(lengths, dim=1)], dim=1)
    torch.testing.assert_close(packed, separate, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("pieces", [[40], [1, 39], [3, 4, 13, 20], [17, 23], [15, 25], [5, 10, 1, 24]])
def test_streaming_in_pieces_equals_one_pass(pieces):
    block = Mamba2Block(Mamba2Config(**TINY)).double()
    x = torch.randn(2, sum(pieces), 32, dtype=torch.float64)
    # row 1: a sample boundary at 15, which some of the cuts hit exactly
    seq = torch.tensor([[0] * 40, [0] * 15 + [1] * 25], dtype=torch.int32)
    full, full_state = block(x, seq_idx=seq, return_state=True)
    state, outs, start = None, [], 0
    for size in pieces:
        out, state = block(x[:, start:start + size], seq_idx=seq[:, start:start + size], state=state, return_state=True)
        outs.append(out)
        start += size
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state.conv_state, full_state.conv_state)
    torch.testing.assert_close(state.ssm_state, full_state.ssm_state, rtol=1e-10, atol=1e-10)
    assert state.conv_state.shape == (2, block.config.conv_dim, 3)
    assert state.ssm_state.shape == (2, block.config.nheads, 8, 8)


def test_zero_state_equals_no_state():
    block = Mamba2Block(Mamba2Config(**TINY))
    x = torch.randn(2, 11, 32)
    torch.testing.assert_close(block(x, state=block.mixer.init_state(2)), block(x))


@pytest.mark.parametrize("pad_as_new_sample", [False, True])
def test_right_padding_leaves_real_tokens_unchanged(pad_as_new_sample):
    block = Mamba2Block(Mamba2Config(**TINY))
    x = torch.randn(2, 19, 32)
    padded = x.clone()
    padded[1, 12:] = torch.randn(7, 32) * 100  # row 1 holds 12 real tokens
    seq = None
    if pad_as_new_sample:  # the padding as its own sample, as the released model packs it
        seq = torch.zeros(2, 19, dtype=torch.int32)
        seq[1, 12:] = 1
    torch.testing.assert_close(block(padded, seq_idx=seq)[1, :12], block(x[1:, :12])[0])


def test_projections_cut_into_pieces_equal_one_matmul(monkeypatch):
    """Over-long inputs go through in_proj/out_proj in token pieces (cuBLAS fails past 2^31 elements on
    GPU); forced here with a tiny limit: same outputs and gradients as one matmul."""
    torch.manual_seed(0)
    block = Mamba2Block(Mamba2Config(d_model=32, d_state=8, headdim=8, chunk_size=8)).double()
    x = torch.randn(2, 37, 32, dtype=torch.float64, requires_grad=True)
    ref_out = block(x)
    ref_grads = torch.autograd.grad(ref_out.sum(), [x, *block.parameters()])
    monkeypatch.setattr("vamba.ops._backend.MAX_KERNEL_ELEMENTS", 8 * block.mixer.in_proj.out_features)
    calls = []
    block.mixer.in_proj.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    out = block(x)
    grads = torch.autograd.grad(out.sum(), [x, *block.parameters()])
    assert len(calls) > 1 and sum(calls) == 2 * 37  # really cut: 8-token pieces of the 74 tokens
    torch.testing.assert_close(out, ref_out)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


def test_bfloat16_block_runs_and_keeps_dtype():
    block = Mamba2Block(Mamba2Config(**TINY)).to(torch.bfloat16)
    x = torch.randn(2, 13, 32, dtype=torch.bfloat16)
    y, state = block(x, return_state=True)
    assert y.dtype == torch.bfloat16 and state.ssm_state.dtype == torch.float32
    ref = Mamba2Block(Mamba2Config(**TINY)).double()
    ref.load_state_dict(block.state_dict())
    torch.testing.assert_close(y.double(), ref(x.double()), rtol=5e-2, atol=5e-2)


def test_bad_config_and_inputs():
    with pytest.raises(ValueError, match="headdim"):
        Mamba2Config(d_model=30, headdim=8)
    with pytest.raises(ValueError, match="backend"):
        Mamba2Config(d_model=32, headdim=8, backend="cuda")
    block = Mamba2Block(Mamba2Config(**TINY))
    with pytest.raises(ValueError, match="seq_idx shape"):
        block(torch.randn(1, 4, 32), seq_idx=torch.zeros(1, 5, dtype=torch.int32))
    assert isinstance(block(torch.randn(1, 4, 32), return_state=True)[1], Mamba2State)


def test_empty_input_passes_state_through():
    block = Mamba2Block(Mamba2Config(**TINY))
    x = torch.randn(2, 6, 32)
    _, state = block(x, return_state=True)
    out, same = block(x[:, :0], state=state, return_state=True)
    assert out.shape == (2, 0, 32) and same is state
    out.sum().backward()  # every parameter stays in the graph (ZeRO-3 needs each rank to run each module)
    assert block.mixer.in_proj.weight.grad is not None


RELEASED_MIXER_CONFIG = {  # the released vision_mamba_mixer_config fields and defaults, plus HF bookkeeping
    "enable": True, "hidden_dim": 3584, "norm_type": "rmsnorm", "residual_in_fp32": False, "d_state": 128,
    "d_conv": 4, "conv_init": None, "expand": 2, "headdim": 64, "d_ssm": None, "ngroups": 1, "A_init_range": [1, 16],
    "D_has_hdim": False, "rmsnorm": True, "norm_before_gate": False, "dt_min": 0.001, "dt_max": 0.1,
    "dt_init_floor": 0.0001, "dt_limit": [0.0, float("inf")], "bias": False, "conv_bias": True, "chunk_size": 256,
    "use_mem_eff_path": True, "process_group": None, "sequence_parallel": True, "rescale_prenorm_residual": True,
    "model_type": "qwen2_vl", "transformers_version": "4.44.0", "return_dict": True, "_name_or_path": "",
}


def test_block_config_from_the_released_mixer_config():
    """The released ``vision_mamba_mixer_config`` is read and checked once, by VambaConfig; its blocks get exactly
    the released Mamba-2 settings."""
    from vamba.models import VambaConfig

    def config(mixer: dict) -> VambaConfig:
        text = dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                    intermediate_size=64, vocab_size=64)
        return VambaConfig(text_config=text, vision_config=dict(depth=1, embed_dim=32, num_heads=2, hidden_size=3584),
                           vision_mamba_mixer_config=mixer)

    assert config(RELEASED_MIXER_CONFIG).mamba_config() == Mamba2Config(d_model=3584, num_layers=28)
    with pytest.raises(ValueError, match="D_has_hdim"):
        config({**RELEASED_MIXER_CONFIG, "D_has_hdim": True})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['d_stat'\]"):
        config({**RELEASED_MIXER_CONFIG, "d_stat": 64})
    with pytest.raises(ValueError, match="hidden_dim=1024 differs from the text hidden size 3584"):
        config({**RELEASED_MIXER_CONFIG, "hidden_dim": 1024})
