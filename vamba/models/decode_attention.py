"""Cross-attention of a few decoding queries over a long cached video: one matmul pass, split over the video.

While decoding, each new token's cross-attention is one query per head over every cached video token of the
layer (hundreds of thousands at an hour of video). A fused attention kernel that parallelises over batch x heads
(1 x 28 at 7B) leaves most of a GPU idle; SDPA's math fallback for grouped-query attention copies the keys and
values once per query head. Here the work is laid out so that every step is a wide, memory-bound
operation that reads the cache once:

1. the query heads that share a key/value head, and the rows that share one video, are folded into the rows of
   one matrix per key/value head: ``q [R, d]`` with ``R = rows * (Hq / Hkv) * Nq``;
2. ``scores = q @ K^T`` is one GEMM per key/value head, wide along the video axis, accumulated and kept in
   float32 (``torch.bmm(..., out_dtype=float32)`` on CUDA for fp16/bf16 inputs);
3. the softmax is exact: a row maximum (a reduction that spreads over the GPU), ``p = exp(s - max)``;
4. ``p @ V`` is a reduction over the video axis, the part a plain GEMM leaves to a few thread blocks: it is split
   into ``chunks`` pieces of the video (split-K), one small GEMM each in one batched call, summed after.
   ``p`` is written in the value dtype for this product, as FlashAttention rounds it, and the softmax denominator
   is the float32 sum of those rounded weights.

Chunks are views of the cache (no copy): their length divides the number of cached tokens (``decode_chunks``
picks the divisor nearest to what fills the device's SMs). No step waits on the host, so a decoding step that
uses it can be captured in a CUDA graph. Inference only (no autograd formula is meant for it; ``split_decode``
refuses tensors that require grad). The reference is ``vamba.models.attention.attention`` (same I/O); the test is
tests/models/test_decode_attention.py.

``VambaConfig.decode_attention`` chooses: ``split`` (this path for every query of at most ``MAX_DECODE_QUERIES``
tokens, on any device), ``reference`` and ``auto`` (never). ``auto`` chose this path on CUDA until it was measured
slower than the reference's SDPA (H100, 7B, commit 3e0b7bb, 2026-12-07, docs/results/answer_decode_h100.json):
``generate`` decoded 28.0 / 28.8 tokens/s at 1,024 / 3,600 frames with it against 39.6 / 40.6 without.
"""
from __future__ import annotations

import functools
import logging
import math

import torch

logger = logging.getLogger(__name__)

DECODE_ATTENTION = ("auto", "reference", "split")
MAX_DECODE_QUERIES = 16  # query tokens per row up to which decoding's split path is used
MIN_CHUNK = 256  # tokens per chunk at least (a chunk's GEMM should stream more than a tile)


def use_split(mode: str, q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether cross-attention of ``q [B, Hq, Nq, d]`` over ``k [B or 1, Hkv, M, d]`` runs ``split_decode``."""
    if mode not in DECODE_ATTENTION:
        raise ValueError(f"VambaConfig.decode_attention must be one of {DECODE_ATTENTION}, got {mode!r}")
    if mode == "reference" or q.shape[-2] > MAX_DECODE_QUERIES:
        return False
    if mode == "auto":  # the reference: measured faster (module docstring)
        return False
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        raise ValueError("decode_attention='split' is inference-only (no backward); use 'auto' or 'reference' "
                         "when gradients are needed")
    return True


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def decode_chunks(m: int, batches: int, device: torch.device) -> int:
    """Pieces the video axis of ``m`` tokens is split into for ``batches`` (rows x key/value heads) matrices: the
    divisor of ``m`` nearest (in ratio) to 4 blocks per SM over the batches, with chunks of at least ``MIN_CHUNK``
    tokens (CPU: as if 8 SMs). 1 when ``m`` has no divisor in that range."""
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device()) \
        if device.type == "cuda" else 8
    target = max(1, min(math.ceil(4 * sms / max(batches, 1)), m // MIN_CHUNK))
    return _nearest_divisor(m, target)


@functools.lru_cache(maxsize=256)
def _nearest_divisor(m: int, target: int) -> int:
    best = 1
    for c in range(1, math.isqrt(m) + 1):
        if m % c:
            continue
        for d in (c, m // c):
            if m // d >= min(MIN_CHUNK, m) and abs(math.log(d / target)) < abs(math.log(best / target)):
                best = d
    return best


@functools.cache
def _cuda_bmm_out_dtype(dtype: torch.dtype) -> bool:
    """Whether this torch's CUDA ``bmm`` takes ``out_dtype=torch.float32`` for ``dtype`` inputs (torch >= 2.8)."""
    try:
        a = torch.ones(1, 2, 2, dtype=dtype, device="cuda")
        return torch.bmm(a, a, out_dtype=torch.float32).dtype == torch.float32
    except (TypeError, RuntimeError, NotImplementedError) as e:
        logger.warning("decode attention: torch %s has no float32-output bmm for %s (%s); the scores are rounded "
                       "to %s before the float32 softmax", torch.__version__, dtype, e, dtype)
        return False


def _bmm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b (3-D) accumulated and returned in float32 without upcasting the (large) operands on CUDA."""
    if a.dtype == torch.float32 and b.dtype == torch.float32:
        return torch.bmm(a, b)
    if a.is_cuda:
        if _cuda_bmm_out_dtype(a.dtype):
            return torch.bmm(a, b, out_dtype=torch.float32)
        return torch.bmm(a, b).float()  # older torch: products rounded to the input dtype (warned once)
    return torch.bmm(a.float(), b.float())  # CPU half precision (no out_dtype kernel): slow, exact


def split_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, q_seg: torch.Tensor | None = None,
                 k_seg: torch.Tensor | None = None, scale: float | None = None, chunks: int | None = None
                 ) -> torch.Tensor:
    """Non-causal attention of few queries over a long key axis (module docstring); ``attention``'s I/O.

    q: [B, Hq, Nq, d]; k, v: [Bk, Hkv, M, d] with Bk = B, or Bk = 1 when every row reads the same video (several
    questions about one video: the cache is read once for all of them); q_seg: [B, Nq], k_seg: [Bk, M] segment ids
    (-1 padding; query i of row b reads key j iff q_seg[b, i] == k_seg[b or 0, j] >= 0), both None for no masking.
    chunks: pieces of the video axis (a divisor of M; default ``decode_chunks``). Returns [B, Nq, Hq, d]; a query
    that reads no key gets zeros.
    """
    if (q_seg is None) != (k_seg is None):
        raise ValueError("pass both q_seg and k_seg, or neither")
    if q.requires_grad or k.requires_grad or v.requires_grad:
        if torch.is_grad_enabled():
            raise ValueError("split_decode is inference-only: call it under torch.no_grad()")
    b, hq, nq, d = q.shape
    bk, hkv, m, _ = k.shape
    if bk not in (b, 1) or hq % hkv:
        raise ValueError(f"split_decode: q {tuple(q.shape)} and k {tuple(k.shape)} do not match (keys: one row per "
                         f"query row or one shared row; query heads a multiple of key heads)")
    g, qb = hq // hkv, b // bk
    rows = qb * g * nq
    scale = d ** -0.5 if scale is None else scale
    # Rows of one key/value head: (query row within the video's rows, query head of the group, query token).
    qr = q.view(bk, qb, hkv, g, nq, d).permute(0, 2, 1, 3, 4, 5).reshape(bk * hkv, rows, d)
    # Views when the cache is contiguous (a VideoCache from streaming or encode_video); a copy per call otherwise.
    kf = k.reshape(bk * hkv, m, d)
    vf = v.reshape(bk * hkv, m, d)
    scores = _bmm_fp32(qr, kf.transpose(1, 2)).mul_(scale)  # [Bk*Hkv, R, M], float32
    view = scores.view(bk, hkv, qb, g, nq, m)
    if q_seg is not None:
        allowed = (q_seg.view(bk, qb, nq, 1) == k_seg.view(bk, 1, 1, m)) & (k_seg.view(bk, 1, 1, m) >= 0)
        view.masked_fill_(~allowed.view(bk, 1, qb, 1, nq, m), float("-inf"))
    # Exact softmax: the row maximum (an empty row's -inf becomes 0: its p is then 0 and so is its output), then
    # exp written straight into the value dtype, chunk-major [Bk*Hkv, C, R, L]: each chunk's p @ V is one entry of a
    # batched GEMM. The denominator sums the p that multiply V (float32 accumulation).
    scores.sub_(scores.amax(-1, keepdim=True).nan_to_num_(neginf=0.0))
    c = chunks or decode_chunks(m, bk * hkv, q.device)
    if m % c:
        raise ValueError(f"split_decode: chunks={c} does not divide the {m} cached tokens")
    length = m // c
    p = torch.empty(bk * hkv, c, rows, length, dtype=v.dtype, device=q.device)
    torch.exp(scores.view(bk * hkv, rows, c, length).transpose(1, 2), out=p)
    denom = p.sum(dim=(1, 3), dtype=torch.float32)  # [Bk*Hkv, R]
    out = _bmm_fp32(p.view(bk * hkv * c, rows, length), vf.reshape(bk * hkv * c, length, d))
    out = out.view(bk * hkv, c, rows, d).sum(1)
    out = out / torch.where(denom > 0, denom, torch.ones((), dtype=denom.dtype, device=denom.device))[..., None]
    out = out.to(q.dtype).view(bk, hkv, qb, g, nq, d).permute(0, 2, 4, 1, 3, 5)
    return out.reshape(b, nq, hq, d)
