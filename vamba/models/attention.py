"""Attention for both VAMBA streams: one function, four backends, one masking rule.

Every call describes its masking with *segment ids* instead of a mask tensor: ``q_seg [B, Nq]`` and
``k_seg [B, Nk]`` (int, ``-1`` = padding). Query ``i`` may read key ``j`` iff they are in the same
segment (``q_seg[b, i] == k_seg[b, j] >= 0``) and, when ``causal``, ``j <= i + (Nk - Nq)`` (the query
block sits at the end of the key axis, so the same rule covers a KV cache). One segment is one
sample: packed rows give block-diagonal attention, padded rows mask their padding, and a query
whose segment has no key at all (a text-only sample in cross-attention, a padding query) gets a
zero output instead of NaN.

Backends (``VambaConfig.attention_backend``):

- ``eager``: the reference; explicit float32 softmax. Used by tests to check the others.
- ``eager_fused``: the fused kernels' reference: the same float32 math with the rounding points of a
  FlashAttention-2-style backward (``attention_ref_fused``). Tests use it to bound what a correct fused
  kernel's bf16 gradients may differ from the truth; never faster, never picked by ``auto``.
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with a boolean mask (or
  ``is_causal`` / no mask when nothing needs masking, so CUDA can pick its flash/cuDNN kernels).
- ``flash_attention_2``: ``flash_attn.flash_attn_varlen_func`` on unpadded tokens (needs the
  ``flash-attn`` package, CUDA, fp16/bf16).
- ``varlen``: PyTorch's ``torch.nn.attention.varlen.varlen_attn`` on unpadded tokens (CUDA,
  fp16/bf16, torch >= 2.10).
- ``auto``: ``flash_attention_2`` if installed and usable, else ``varlen`` for masked (padded or
  packed) CUDA half-precision inputs when available, else ``sdpa``.

The varlen backends need no KV cache and segments laid out contiguously in each row (packed
samples one after the other, padding last); ``attention`` falls back to ``sdpa`` otherwise.
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

ATTENTION_BACKENDS = ("auto", "eager", "eager_fused", "sdpa", "flash_attention_2", "varlen")


@functools.cache
def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


@functools.cache
def torch_varlen_available() -> bool:
    try:
        from torch.nn.attention import varlen  # noqa: F401
    except ImportError:
        return False
    return True


def varlen_kernel() -> Callable | None:
    """The variable-length attention kernel this machine has, ``(q [Tq, Hq, d], k, v [Tk, Hkv, d], cu_q, cu_k,
    max_q, max_k, causal, scale) -> [Tq, Hq, d]`` (CUDA, fp16/bf16): flash-attn's, else torch's, else None."""
    if flash_attn_available():
        return _flash_varlen
    return _torch_varlen if torch_varlen_available() else None


@functools.cache
def _sdpa_has_gqa() -> bool:
    # SDPA is a builtin (no inspectable signature); enable_gqa arrived in torch 2.5.
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 5)


@functools.cache
def _log_choice(backend: str) -> None:
    logger.info("vamba attention: using the %s backend", backend)


def resolve_backend(backend: str, q: torch.Tensor, masked: bool, has_cache: bool) -> str:
    """The backend that will actually run for these inputs (see module docstring)."""
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {ATTENTION_BACKENDS}")
    half_cuda = q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
    if backend == "auto":
        if half_cuda and not has_cache and flash_attn_available():
            backend = "flash_attention_2"
        elif half_cuda and not has_cache and masked and torch_varlen_available():
            backend = "varlen"
        else:
            backend = "sdpa"
        _log_choice(backend)
        return backend
    if backend in ("flash_attention_2", "varlen"):
        if backend == "flash_attention_2" and not flash_attn_available():
            raise ImportError("attention_backend='flash_attention_2' needs the flash-attn package "
                              "(pip install 'vamba[kernels]'); use 'sdpa' or 'auto' instead")
        if backend == "varlen" and not torch_varlen_available():
            raise ImportError(f"attention_backend='varlen' needs torch.nn.attention.varlen (torch>=2.10), "
                              f"this is torch {torch.__version__}")
        if not half_cuda:
            raise ValueError(f"attention_backend={backend!r} runs on CUDA in fp16/bf16 only, "
                             f"got {q.device.type} {q.dtype}")
        if has_cache:
            return "sdpa"  # decoding steps: one query per row, nothing to unpad
    return backend


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
              q_seg: torch.Tensor | None = None, k_seg: torch.Tensor | None = None,
              backend: str = "auto", scale: float | None = None) -> torch.Tensor:
    """Multi-head attention with segment masking (module docstring).

    q: [B, Hq, Nq, d]; k, v: [B, Hkv, Nk, d] with Hq % Hkv == 0 (grouped-query attention);
    q_seg: [B, Nq], k_seg: [B, Nk] int segment ids (-1 padding), both None for "no masking".
    Returns [B, Nq, Hq, d] (heads last, ready for ``o_proj``).
    """
    if (q_seg is None) != (k_seg is None):
        raise ValueError("pass both q_seg and k_seg, or neither")
    nq, nk = q.shape[-2], k.shape[-2]
    backend = resolve_backend(backend, q, masked=q_seg is not None, has_cache=causal and nk != nq)
    if backend in ("flash_attention_2", "varlen"):
        kernel = _flash_varlen if backend == "flash_attention_2" else _torch_varlen
        return attention_unpadded(q, k, v, causal=causal, q_seg=q_seg, k_seg=k_seg, kernel=kernel, scale=scale)
    if backend == "eager":
        return attention_ref(q, k, v, causal=causal, q_seg=q_seg, k_seg=k_seg, scale=scale)
    if backend == "eager_fused":
        return attention_ref_fused(q, k, v, causal=causal, q_seg=q_seg, k_seg=k_seg, scale=scale)
    return _attention_sdpa(q, k, v, causal, q_seg, k_seg, scale)


def allowed_mask(q_seg: torch.Tensor | None, k_seg: torch.Tensor | None, nq: int, nk: int, causal: bool,
                 device: torch.device) -> torch.Tensor | None:
    """Boolean [B or 1, 1, Nq, Nk]: True where query i may read key j. None = everything allowed."""
    mask = None
    if q_seg is not None:
        mask = (q_seg[:, :, None] == k_seg[:, None, :]) & (k_seg[:, None, :] >= 0)
        mask = mask[:, None]
    if causal and not (nq == 1 and mask is None):
        offset = nk - nq
        tri = torch.ones(nq, nk, dtype=torch.bool, device=device).tril(diagonal=offset)[None, None]
        mask = tri if mask is None else mask & tri
    return mask


def attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                  q_seg: torch.Tensor | None = None, k_seg: torch.Tensor | None = None,
                  scale: float | None = None) -> torch.Tensor:
    """Reference: explicit scores, softmax in (at least) float32, zero rows where a query reads no key.
    Same I/O as ``attention``."""
    hq, hkv = q.shape[1], k.shape[1]
    k = k.repeat_interleave(hq // hkv, dim=1)
    v = v.repeat_interleave(hq // hkv, dim=1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    acc = torch.promote_types(q.dtype, torch.float32)  # at least float32
    scores = torch.matmul(q.to(acc), k.to(acc).transpose(-1, -2)) * scale
    mask = allowed_mask(q_seg, k_seg, q.shape[-2], k.shape[-2], causal, q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
        empty = ~mask.any(-1, keepdim=True)
        scores = scores.masked_fill(empty, 0.0)  # finite softmax on rows that are zeroed below
    probs = torch.softmax(scores, dim=-1)
    if mask is not None:
        probs = probs.masked_fill(empty, 0.0)
    out = torch.matmul(probs, v.to(acc)).to(q.dtype)
    return out.transpose(1, 2)


def _probs_ref(q, k, mask, scale):
    """Softmax in (at least) float32 of the scores (GQA-expanded k), zero rows where a query reads no key."""
    acc = torch.promote_types(q.dtype, torch.float32)
    scores = torch.matmul(q.to(acc), k.to(acc).transpose(-1, -2)) * scale
    if mask is None:
        return torch.softmax(scores, dim=-1)
    empty = ~mask.any(-1, keepdim=True)
    scores = scores.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)
    return torch.softmax(scores, dim=-1).masked_fill(empty, 0.0)


class _FusedStyleAttention(torch.autograd.Function):
    """Attention whose backward rounds where FlashAttention-2's does (Dao 2023, Algorithm 2), all else float32:
    D = rowsum(dO * O) is taken from the *rounded* output O, and P and dS = P (dP - D) are rounded to the input
    dtype before the dV = P^T dO and dQ = dS K, dK = dS^T Q matmuls. The eager reference differentiates the
    float32 softmax instead (D exact). Where keys share a large common component (a key bias, similar video
    states), dQ = sum_j dS_j k_j cancels it exactly in exact arithmetic, but the rounding of O (hence D) does
    not: that residue is the error any correct fused kernel carries, and this function measures it."""

    @staticmethod
    def forward(ctx, q, k, v, mask, scale):  # q [B, H, Nq, d], k/v [B, H, Nk, d] (GQA already expanded)
        p = _probs_ref(q, k, mask, scale)
        out = torch.matmul(p, v.to(p.dtype)).to(q.dtype)
        ctx.save_for_backward(q, k, v, out, mask)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, out, mask = ctx.saved_tensors
        dtype, scale = q.dtype, ctx.scale
        p = _probs_ref(q, k, mask, scale)
        acc = p.dtype

        def rounded(t):
            return t.to(dtype).to(acc)

        d_out = d_out.to(acc)
        dp = torch.matmul(d_out, v.to(acc).transpose(-1, -2))
        delta = (d_out * out.to(acc)).sum(-1, keepdim=True)  # from the rounded O, as the kernels do
        ds = rounded(p * (dp - delta))
        dv = torch.matmul(rounded(p).transpose(-1, -2), d_out)
        dq = torch.matmul(ds, k.to(acc)) * scale
        dk = torch.matmul(ds.transpose(-1, -2), q.to(acc)) * scale
        return dq.to(dtype), dk.to(dtype), dv.to(dtype), None, None


def attention_ref_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                        q_seg: torch.Tensor | None = None, k_seg: torch.Tensor | None = None,
                        scale: float | None = None) -> torch.Tensor:
    """``attention_ref`` with a fused kernel's backward rounding (``_FusedStyleAttention``). Same I/O; in float32
    it equals ``attention_ref`` (every rounding is then the identity)."""
    hq, hkv = q.shape[1], k.shape[1]
    k = k.repeat_interleave(hq // hkv, dim=1)
    v = v.repeat_interleave(hq // hkv, dim=1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    mask = allowed_mask(q_seg, k_seg, q.shape[-2], k.shape[-2], causal, q.device)
    if mask is not None:
        mask = mask.expand(q.shape[0], 1, q.shape[-2], k.shape[-2])
    return _FusedStyleAttention.apply(q, k, v, mask, scale).transpose(1, 2)


def _attention_sdpa(q, k, v, causal, q_seg, k_seg, scale):
    nq, nk = q.shape[-2], k.shape[-2]
    hq, hkv = q.shape[1], k.shape[1]
    kwargs = {"scale": scale}
    if hq != hkv:
        if _sdpa_has_gqa():
            kwargs["enable_gqa"] = True
        else:
            k = k.repeat_interleave(hq // hkv, dim=1)
            v = v.repeat_interleave(hq // hkv, dim=1)
    if q_seg is None and (not causal or nq == nk or nq == 1):
        # Nothing to mask: let SDPA pick its fastest kernel.
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal and nq > 1, **kwargs)
        return out.transpose(1, 2)
    mask = allowed_mask(q_seg, k_seg, nq, nk, causal, q.device)
    empty = ~mask.any(-1, keepdim=True)  # [B, 1, Nq, 1]
    # A fully masked row would give NaN; let it read everything, then zero it.
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | empty, **kwargs)
    out = out.masked_fill(empty, 0.0)
    return out.transpose(1, 2)


def _segments_contiguous(seg: torch.Tensor) -> bool:
    """Each row: valid ids non-decreasing, all padding (-1) after the last valid token."""
    valid = seg >= 0
    nxt_valid = valid[:, 1:]
    ordered = (seg[:, 1:] >= seg[:, :-1]) | ~nxt_valid
    pad_last = ~(nxt_valid & ~valid[:, :-1])
    return bool((ordered & pad_last).all())


def attention_unpadded(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                       q_seg: torch.Tensor | None, k_seg: torch.Tensor | None, kernel, scale: float | None = None
                       ) -> torch.Tensor:
    """Same I/O as ``attention``, computed on unpadded tokens by a varlen ``kernel``
    ``(q [Tq, Hq, d], k, v [Tk, Hkv, d], cu_q, cu_k, max_q, max_k, causal, scale) -> [Tq, Hq, d]``
    (``_flash_varlen``, ``_torch_varlen`` or the reference ``varlen_ref``).

    Each (row, segment) pair is one varlen sequence; the query and key groups are matched by that pair,
    so a text sample reads exactly its own video. Falls back to SDPA when segments are not contiguous.
    """
    b, hq, nq, d = q.shape
    if q_seg is None:
        q_seg = torch.zeros(b, nq, dtype=torch.long, device=q.device)
        k_seg = torch.zeros(b, k.shape[-2], dtype=torch.long, device=q.device)
    if not (_segments_contiguous(q_seg) and _segments_contiguous(k_seg)):
        return _attention_sdpa(q, k, v, causal, q_seg, k_seg, scale)
    n_seg = int(max(q_seg.max().item(), k_seg.max().item())) + 1
    row = torch.arange(b, device=q.device)
    # Group id per token (row-major order keeps each (row, segment) group contiguous after unpadding).
    gq = torch.where(q_seg >= 0, row[:, None] * n_seg + q_seg, -1).flatten()
    gk = torch.where(k_seg >= 0, row[:, None] * n_seg + k_seg, -1).flatten()
    q_count = torch.bincount(gq[gq >= 0], minlength=b * n_seg)
    k_count = torch.bincount(gk[gk >= 0], minlength=b * n_seg)
    keep = q_count > 0
    q_idx = (gq >= 0).nonzero().squeeze(1)
    k_idx = ((gk >= 0) & keep[gk.clamp(min=0)]).nonzero().squeeze(1)  # keys of groups with no query: dropped
    cu_q = F.pad(q_count[keep].cumsum(0), (1, 0)).to(torch.int32)
    cu_k = F.pad(k_count[keep].cumsum(0), (1, 0)).to(torch.int32)
    max_q, max_k = int(q_count.max().item()), int(k_count[keep].max().item())
    qu = q.transpose(1, 2).reshape(b * nq, hq, d)[q_idx]
    ku = k.transpose(1, 2).reshape(-1, k.shape[1], d)[k_idx]
    vu = v.transpose(1, 2).reshape(-1, v.shape[1], d)[k_idx]
    if max_k == 0:
        # Nothing to read (a batch without video): zeros that keep q, k and v in the graph. Every parameter must
        # get a gradient on every rank, or ZeRO's gradient reductions differ between ranks and hang.
        out_u = qu * 0 + 0 * (ku.sum() + vu.sum())
    else:
        out_u = kernel(qu, ku, vu, cu_q, cu_k, max_q, max_k, causal, scale)
    # Groups without keys (text-only samples in cross-attention) read nothing: zero output.
    has_k = (k_count > 0)[gq[q_idx]]
    out_u = torch.where(has_k[:, None, None], out_u, torch.zeros((), dtype=out_u.dtype, device=out_u.device))
    out = out_u.new_zeros(b * nq, hq, d).index_copy(0, q_idx, out_u)
    return out.view(b, nq, hq, d)


def varlen_ref(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale):
    """Reference varlen kernel: ``attention_ref`` on each sequence (bottom-right causal alignment, as flash)."""
    out = []
    for i in range(cu_q.numel() - 1):
        qs = q[cu_q[i]:cu_q[i + 1]].transpose(0, 1)[None]
        ks = k[cu_k[i]:cu_k[i + 1]].transpose(0, 1)[None]
        vs = v[cu_k[i]:cu_k[i + 1]].transpose(0, 1)[None]
        if ks.shape[2] == 0:
            out.append(torch.zeros_like(qs[0].transpose(0, 1)))
            continue
        out.append(attention_ref(qs, ks, vs, causal=causal, scale=scale)[0])
    return torch.cat(out)


def _flash_varlen(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale):
    from flash_attn import flash_attn_varlen_func

    return flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale=scale, causal=causal)


def _torch_varlen(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale):
    from torch.nn.attention.varlen import varlen_attn

    params = inspect.signature(varlen_attn).parameters
    kwargs = {"scale": scale}
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in params:
            kwargs["enable_gqa"] = True
        else:
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    if "window_size" in params:
        kwargs["window_size"] = (-1, 0) if causal else (-1, -1)
    else:
        kwargs["is_causal"] = causal
    return varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, **kwargs)
