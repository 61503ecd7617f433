"""Backend dispatch and the fast paths' own logic on CPU: a stand-in for the third-party kernels
(mamba-ssm's ``mamba_chunk_scan_combined`` and ``rmsnorm_fn``, causal-conv1d's ``causal_conv1d_fn``)
enforces their calling rules (32-bit element counts, int32 seq_idx numbered from 0 per row, seq_idx and
initial states not together, channel-last layout) and computes with the reference. It checks what our
wrappers add: cutting long inputs into pieces with the state carried, seq_idx renumbering, the conv
history trick. The real kernels are compared in tests/gpu."""
from __future__ import annotations

import types

import pytest
import torch

import vamba.ops._backend as backend
from vamba.models.mamba2 import Mamba2Block, Mamba2Config
from vamba.ops.conv1d import causal_conv1d_ref
from vamba.ops.norm import gated_rms_norm_ref
from vamba.ops.ssd import ssd_scan_ref


class KernelStandIn:
    """The kernels' signatures and input rules; results from the PyTorch reference."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def mamba_chunk_scan_combined(self, x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
                                  seq_idx=None, cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
                                  return_final_states=False):
        assert x.numel() <= backend.MAX_KERNEL_ELEMENTS
        if seq_idx is not None:  # the kernel ties the initial state to sample 0
            assert seq_idx.dtype == torch.int32 and not seq_idx[:, 0].any()
        self.calls.append(("scan", x.shape[1]))
        return ssd_scan_ref(x, dt, A, B, C, chunk_size, D, dt_bias, dt_softplus, dt_limit, seq_idx, initial_states,
                            return_final_states)

    def causal_conv1d_fn(self, x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                         activation=None):
        assert x.numel() <= backend.MAX_KERNEL_ELEMENTS
        assert seq_idx is None or initial_states is None
        assert (seq_idx is None and initial_states is None) or x.stride(1) == 1
        self.calls.append(("conv", x.shape[-1]))
        return causal_conv1d_ref(x, weight, bias, seq_idx, initial_states, False, activation)

    def rmsnorm_fn(self, x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True):
        assert x.numel() <= backend.MAX_KERNEL_ELEMENTS and x.dim() == 2
        self.calls.append(("norm", x.shape[0]))
        return gated_rms_norm_ref(x, weight, z, eps, group_size, norm_before_gate)


@pytest.fixture
def kernels(monkeypatch: pytest.MonkeyPatch) -> KernelStandIn:
    stand_in = KernelStandIn()

    def resolve(op, choice, package, tensor):
        return None if choice == "reference" else types.SimpleNamespace(
            mamba_chunk_scan_combined=stand_in.mamba_chunk_scan_combined,
            causal_conv1d_fn=stand_in.causal_conv1d_fn, rmsnorm_fn=stand_in.rmsnorm_fn)

    for module in ("vamba.ops.ssd", "vamba.ops.conv1d", "vamba.ops.norm"):
        monkeypatch.setattr(f"{module}.resolve", resolve)
    monkeypatch.setattr(backend, "MAX_KERNEL_ELEMENTS", 2000)  # tiny, so short inputs get cut
    return stand_in


@pytest.mark.parametrize("packed", [False, True])
def test_fast_block_cut_into_pieces_matches_reference(kernels, packed):
    config = dict(d_model=32, d_state=8, headdim=8, chunk_size=8)
    ref = Mamba2Block(Mamba2Config(**config)).double()
    fast = Mamba2Block(Mamba2Config(**config, backend="fast")).double()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 61, 32, dtype=torch.float64, requires_grad=True)
    seq = torch.tensor([[3] * 16 + [4] * 45, [0] * 61], dtype=torch.int32) if packed else None
    outs = []
    for block in (ref, fast):
        out, state = block(x, seq_idx=seq, return_state=True)
        grads = torch.autograd.grad(out.square().sum() + state.ssm_state.sum(), [x, *block.parameters()])
        outs.append((out, state, grads))
    assert {name for name, _ in kernels.calls} == {"scan", "conv", "norm"}
    assert max(n for name, n in kernels.calls if name == "scan") < 61  # the inputs were cut
    (o1, s1, g1), (o2, s2, g2) = outs
    torch.testing.assert_close(o2, o1)
    torch.testing.assert_close(s2.ssm_state, s1.ssm_state)
    torch.testing.assert_close(s2.conv_state, s1.conv_state)
    for a, b in zip(g2, g1):
        torch.testing.assert_close(a, b)


def test_token_pieces_cover_the_sequence_in_multiples():
    pieces = backend.token_pieces(1000, 7168, multiple=256)
    assert pieces == [slice(0, 1000)]
    pieces = backend.token_pieces(612_000, 112 * 64, multiple=256)
    sizes = [p.stop - p.start for p in pieces]
    assert sum(sizes) == 612_000 and all(s % 256 == 0 for s in sizes[:-1])
    assert max(sizes) * 112 * 64 <= backend.MAX_KERNEL_ELEMENTS


def test_auto_uses_reference_on_cpu_and_fast_explains_how_to_install():
    x = torch.randn(3, 4)
    assert backend.resolve("op", "auto", "causal_conv1d", x) is None
    with pytest.raises(RuntimeError, match="pip install"):
        backend.resolve("op", "fast", "mamba_ssm.ops.triton.ssd_combined", x)
    with pytest.raises(ValueError, match="unknown backend"):
        backend.resolve("op", "triton", "causal_conv1d", x)


def _fake_mamba_ssm(root, init_imports: str) -> None:
    """A package laid out like mamba-ssm: __init__ imports ``init_imports``; the Triton module does not."""
    triton_dir = root / "mamba_ssm" / "ops" / "triton"
    triton_dir.mkdir(parents=True)
    (root / "mamba_ssm" / "__init__.py").write_text(f"import {init_imports}\n")
    (root / "mamba_ssm" / "ops" / "__init__.py").write_text("")
    (triton_dir / "__init__.py").write_text("")
    (triton_dir / "ssd_combined.py").write_text("def mamba_chunk_scan_combined():\n    return 'triton'\n")


def _forget_mamba_ssm(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    for name in [n for n in sys.modules if n == "mamba_ssm" or n.startswith("mamba_ssm.")]:
        monkeypatch.delitem(sys.modules, name)


def test_mamba_ssm_without_selective_scan_cuda_still_loads_triton_kernels(tmp_path, monkeypatch):
    import sys

    _fake_mamba_ssm(tmp_path, "selective_scan_cuda")
    _forget_mamba_ssm(monkeypatch)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = backend._import_mamba_ssm_submodule("ops.triton.ssd_combined")
    assert module.mamba_chunk_scan_combined() == "triton"
    assert "mamba_ssm" not in sys.modules  # the bare package is gone: a later import behaves as before
    with pytest.raises(ModuleNotFoundError, match="selective_scan_cuda"):
        __import__("mamba_ssm")
    _forget_mamba_ssm(monkeypatch)


@pytest.mark.parametrize("deterministic", ["", "1"])
def test_kernels_are_defined_with_triton_autotune_cache_on_unless_deterministic(tmp_path, monkeypatch, deterministic):
    """Triton reads TRITON_CACHE_AUTOTUNING when a kernel is defined, i.e. when its module is imported: the value
    must be there before. Under MAMBA_DETERMINISTIC=1 mamba-ssm compiles one config per kernel only without it."""
    _fake_mamba_ssm(tmp_path, "os")
    (tmp_path / "mamba_ssm" / "ops" / "triton" / "ssd_combined.py").write_text(
        "import os\nSEEN = os.environ.get('TRITON_CACHE_AUTOTUNING')\n")
    _forget_mamba_ssm(monkeypatch)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("TRITON_CACHE_AUTOTUNING", raising=False)
    monkeypatch.setenv("MAMBA_DETERMINISTIC", deterministic)
    module, why = backend.load_kernel.__wrapped__("mamba_ssm.ops.triton.ssd_combined")
    assert why == "" and module.SEEN == (None if deterministic else "1")
    monkeypatch.setenv("TRITON_CACHE_AUTOTUNING", "0")  # a user's value wins
    _forget_mamba_ssm(monkeypatch)
    module, _ = backend.load_kernel.__wrapped__("mamba_ssm.ops.triton.ssd_combined")
    assert module.SEEN == "0"
    _forget_mamba_ssm(monkeypatch)


def test_mamba_ssm_other_import_errors_are_not_hidden(tmp_path, monkeypatch):
    _fake_mamba_ssm(tmp_path, "some_missing_dependency")
    _forget_mamba_ssm(monkeypatch)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="some_missing_dependency"):
        backend._import_mamba_ssm_submodule("ops.triton.ssd_combined")
    _forget_mamba_ssm(monkeypatch)


def test_compact_copies_only_views_whose_memory_span_passes_the_limit(monkeypatch):
    wide = torch.randn(1, 50, 40)
    dt = wide[..., -3:]  # a 3-column slice of a 40-column projection: 150 elements spread over 1963
    assert backend.span(dt) == 49 * 40 + 3 and backend.span(wide) == wide.numel()
    assert backend.compact(dt) is dt  # under the limit: the view itself, no copy
    monkeypatch.setattr(backend, "MAX_KERNEL_ELEMENTS", 1000)
    dense = backend.compact(dt)
    assert dense.is_contiguous() and backend.span(dense) == 150 and torch.equal(dense, dt)
