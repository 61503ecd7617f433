"""Kernels: one public function per op, a fast path beside a pure-PyTorch reference.

Every op takes ``backend="auto" | "fast" | "reference"`` (``OP_BACKENDS``; see ``_backend.py``). Optional kernel
packages (mamba-ssm, causal-conv1d) are imported lazily on first CUDA use; this package imports only torch.
``token_pieces`` cuts a token axis so that no operand passes the kernels' 32-bit indexing (the model's
projections cut their inputs the same way).
"""
from vamba.ops._backend import OP_BACKENDS, available, token_pieces
from vamba.ops.conv1d import causal_conv1d, causal_conv1d_ref
from vamba.ops.norm import gated_rms_norm, gated_rms_norm_ref
from vamba.ops.ssd import ssd_scan, ssd_scan_ref

__all__ = ["OP_BACKENDS", "available", "causal_conv1d", "causal_conv1d_ref", "gated_rms_norm", "gated_rms_norm_ref",
           "ssd_scan", "ssd_scan_ref", "token_pieces"]
