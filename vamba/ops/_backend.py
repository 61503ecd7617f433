"""Backend choice for the ops: ``auto | fast | reference``, and the optional kernel packages behind "fast".

Optional packages are imported once, lazily, on first use (never at ``import vamba.ops``, so CPU-only
machines and the doctor command stay fast). ``auto`` picks the fast kernel for CUDA tensors when its
package imports and logs the choice once per op; ``fast`` raises with an install hint when it cannot run.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import types
from typing import Literal

import torch
from torch import Tensor

from vamba.utils.logging import get_logger, log_once

Backend = Literal["auto", "fast", "reference"]
OP_BACKENDS: tuple[str, ...] = ("auto", "fast", "reference")

_log = get_logger(__name__)

INSTALL_HINT = {
    "mamba_ssm": "pip install 'mamba-ssm>=2.2' --no-build-isolation (MAMBA_SKIP_CUDA_BUILD=TRUE is enough: "
                 "only its Triton kernels are used; see docs/kernels.md)",
    "causal_conv1d": "pip install 'causal-conv1d>=1.4' --no-build-isolation (see docs/kernels.md)",
}


def _import_mamba_ssm_submodule(name: str) -> types.ModuleType:
    """Import ``mamba_ssm.<name>`` even when ``mamba_ssm/__init__.py`` cannot run.

    NOTE: mamba-ssm's package ``__init__`` imports its Mamba-1 selective-scan CUDA extension
    (``selective_scan_cuda``). Installed with ``MAMBA_SKIP_CUDA_BUILD=TRUE`` (the only install that does
    not take a long CUDA build) that extension is absent, so ``import mamba_ssm`` fails although the
    Triton Mamba-2 kernels we use (``ops/triton/ssd_combined.py``, ``layernorm_gated.py``) never touch it.
    Only for exactly that failure we load the submodules through a bare package object that skips
    ``__init__``, then put ``sys.modules`` back as it was so later ``import mamba_ssm`` behaves as before.
    """
    try:
        return importlib.import_module(f"mamba_ssm.{name}")
    except ModuleNotFoundError as err:
        if err.name != "selective_scan_cuda":
            raise
    spec = importlib.util.find_spec("mamba_ssm")
    assert spec is not None and spec.submodule_search_locations is not None
    bare = types.ModuleType("mamba_ssm")
    bare.__path__ = list(spec.submodule_search_locations)
    bare.__spec__ = spec
    previous = sys.modules.get("mamba_ssm")
    sys.modules["mamba_ssm"] = bare
    try:
        return importlib.import_module(f"mamba_ssm.{name}")
    finally:
        if previous is None:
            sys.modules.pop("mamba_ssm", None)
        else:
            sys.modules["mamba_ssm"] = previous


@functools.cache
def load_kernel(package: str) -> tuple[types.ModuleType | None, str]:
    """(module, "") or (None, why not) for one optional kernel module.

    package: ``mamba_ssm.ops.triton.ssd_combined``, ``mamba_ssm.ops.triton.layernorm_gated`` or
    ``causal_conv1d``.
    """
    # Triton keeps each autotuned kernel's chosen config on disk (in TRITON_CACHE_DIR) when this is set before the
    # kernels are defined: a relaunch on the same machine skips the Mamba-2 kernels' autotuning and, resumed, runs the
    # configs the killed run ran. Not for a kernel with a config pre_hook (Triton 3.6 does not store those): eight
    # of mamba-ssm 2.3.2's backward kernels are tuned again at every launch (docs/kernels.md).
    # A user's value wins. Not under MAMBA_DETERMINISTIC=1: there mamba-ssm compiles one config per kernel unless
    # this is set, and would autotune them all with it (minutes of compilation in the GPU tests that set it).
    if not os.environ.get("MAMBA_DETERMINISTIC", "").startswith("1"):
        os.environ.setdefault("TRITON_CACHE_AUTOTUNING", "1")
    try:
        if package.startswith("mamba_ssm."):
            module = _import_mamba_ssm_submodule(package.removeprefix("mamba_ssm."))
            _remember_autotuning()
            return module, ""
        return importlib.import_module(package), ""
    except ImportError as err:  # missing package, missing triton, ABI-mismatched extension
        return None, f"{type(err).__name__}: {err}"


def _remember_autotuning() -> None:
    """The Mamba-2 kernels' autotuning choices of earlier launches back into them, this launch's saved at exit
    (``vamba.ops.autotune``: Triton does not keep those of kernels with a pre_hook). Off with
    ``VAMBA_AUTOTUNE_CHOICES=0`` and under ``MAMBA_DETERMINISTIC=1`` (one config per kernel, nothing tuned)."""
    off = os.environ.get("VAMBA_AUTOTUNE_CHOICES", "1") == "0"
    if off or os.environ.get("MAMBA_DETERMINISTIC", "").startswith("1") or not torch.cuda.is_available():
        return
    try:
        from vamba.ops.autotune import remember

        remember(torch.cuda.get_device_name())
    except Exception as e:  # never a reason not to run the kernels: they are tuned again
        log_once(_log, f"Triton autotuning choices not restored ({type(e).__name__}: {e})")


def resolve(op: str, backend: str, package: str, tensor: torch.Tensor) -> types.ModuleType | None:
    """The kernel module to run ``op`` with, or None for the PyTorch reference.

    op: name for messages; package: what ``load_kernel`` imports; tensor: an input (its device decides).
    """
    if backend not in OP_BACKENDS:
        raise ValueError(f"{op}: unknown backend {backend!r}; expected one of {OP_BACKENDS}")
    if backend == "reference":
        return None
    module, why = load_kernel(package) if tensor.is_cuda else (None, f"input is on {tensor.device.type}")
    root = package.split(".")[0]
    if backend == "fast":
        if module is None:
            raise RuntimeError(f"{op}: backend='fast' needs {root} on a CUDA tensor ({why}). "
                               f"Install: {INSTALL_HINT[root]}; or use backend='auto'/'reference'.")
        return module
    if module is None:
        log_once(_log, f"{op}: using the PyTorch reference ({why})")
    else:
        log_once(_log, f"{op}: using the {root} kernel")
    return module


# NOTE: the Triton and CUDA kernels index with 32-bit integers: mamba-ssm's Triton kernels overflow
# (illegal memory access) once a [batch, length, ...] operand passes 2^31 elements, e.g. x at 612k tokens
# x 112 heads x 64 in VAMBA-7B (measured on an H100, 2026-11-23); causal-conv1d uses 32-bit strides.
# The fast paths therefore cut longer inputs into pieces along the sequence and carry the state across.
MAX_KERNEL_ELEMENTS = 2**31 - 1


def token_pieces(length: int, elements_per_token: int, multiple: int = 1, extra_tokens: int = 0) -> list[slice]:
    """Slices of [0, length) whose operands (plus ``extra_tokens`` of history) stay under MAX_KERNEL_ELEMENTS;
    sizes are multiples of ``multiple``."""
    tokens = MAX_KERNEL_ELEMENTS // max(elements_per_token, 1) - extra_tokens
    step = max(multiple, tokens // multiple * multiple)
    return [slice(start, min(start + step, length)) for start in range(0, length, step)] or [slice(0, 0)]


def span(t: Tensor) -> int:
    """Elements between the first and the last element of ``t`` in memory (its strides, not its size)."""
    return 1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride())) if t.numel() else 0


def too_wide(t: Tensor) -> bool:
    """Whether ``t``'s memory span passes MAX_KERNEL_ELEMENTS (the kernels' 32-bit offsets would overflow)."""
    return span(t) > MAX_KERNEL_ELEMENTS


def compact(t: Tensor) -> Tensor:
    """``t``, copied to a dense layout of the same dimension order when its memory span passes
    MAX_KERNEL_ELEMENTS. NOTE: a piece cut from a wide projection (dt is a 112-column slice of VAMBA-7B's
    16.6k-column in_proj output) spans its row stride per token, not its own width; the kernels' 32-bit
    offsets overflowed on such a view at 153k tokens (illegal memory access, H100, 2026-11-23)."""
    return t.contiguous() if too_wide(t) else t


def available() -> dict[str, str]:
    """Kernel availability for ``vamba doctor``: package -> "ok" or the import error."""
    names = ("mamba_ssm.ops.triton.ssd_combined", "mamba_ssm.ops.triton.layernorm_gated", "causal_conv1d")
    return {name: (load_kernel(name)[1] or "ok") for name in names}
