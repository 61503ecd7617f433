"""Qwen2-VL's vision tower with a fast forward: ``VambaVisionTower`` (``visual.*`` keys, transformers' modules).

The tower is transformers' ``Qwen2VisionTransformerPretrainedModel`` (same submodules, weights, initialisation
and checkpoint keys); only its top-level ``forward`` is ours, and only VAMBA builds this class, so a transformers
Qwen2-VL in the same process keeps transformers' forward. ``VambaConfig.vision_attention`` picks the path:

- ``reference``: transformers' own forward. Its ``VisionAttention`` (the same in transformers 5.17 and 5.24)
  reads the piece lengths to the host (``lengths.tolist()``) and calls the attention function once per temporal
  patch (512 calls per layer for 1024 frames) unless a flash implementation is configured; it applies the
  rotary embedding to q and k separately in float32 (a float32 copy of each, seven elementwise kernels) and
  QuickGELU as three kernels.
- ``auto`` (default), ``batched``, ``varlen``: the fast forward below, same math. Attention runs within each
  piece (temporal patch of one item), and every piece of one item has the same length, so the pieces of all
  items of one length are ONE ``scaled_dot_product_attention`` call ``[pieces, heads, length, head_dim]``
  (one call per layer for one video). A ragged batch (items of different sizes) takes, under ``auto``, one
  variable-length kernel call (flash-attn's ``flash_attn_varlen_func`` if installed, else
  ``torch.nn.attention.varlen.varlen_attn``; CUDA, fp16/bf16), otherwise one batched call per distinct length;
  ``batched`` always does the latter, ``varlen`` always the former. The plan is made once per forward (one host
  read of ``grid_thw``), not per layer.

Other costs the fast forward removes (all changes are rounding-level: float32 results agree with the reference
to ~1e-6, tests/models/test_vision_tower.py):

- patch embedding: the Conv3d whose kernel equals its stride is a plain matmul of the [P, 1176] patches with the
  flattened conv weight;
- rotary embedding: cos/sin computed once per forward (transformers' ``rotary_pos_emb``) with the rotate-half
  sign folded into sin, applied to q and k together in three kernels (mul, swap halves, addcmul) in the
  activations' dtype; with ``vision_compile`` in float32 inside one fused kernel (the reference's precision);
- QuickGELU ``x * sigmoid(1.702 x)`` = ``silu(1.702 x) / 1.702``: the 1.702 goes into fc1's GEMM (``alpha``,
  bias pre-scaled) and 1/1.702 into fc2's, leaving one ``silu`` kernel;
- ``vision_compile`` (opt-in): ``torch.compile`` of the two halves of every block around the attention call
  (LayerNorm + qkv + rotary; output projection + residual + LayerNorm + MLP + residual): the elementwise work
  fuses into the matmuls' neighbours. The weights are function arguments, so all blocks share one graph, and the
  token count is symbolic from the first call, so one compilation serves every video length and piece size.

Gradient checkpointing of the blocks (transformers' switch) is honoured. Under DeepSpeed ZeRO-3 (partitioned
parameters: they are gathered by hooks on each submodule's call, which the fast forward does not make) and when
transformers' output recording is asked for (``output_hidden_states``, ...), the tower runs the reference.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import QuickGELUActivation
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel
from transformers.vision_utils import get_vision_position_ids

from vamba.models.attention import varlen_kernel
from vamba.models.zero import is_zero3
from vamba.ops.fp8 import fp8_linear

VISION_ATTENTION = ("auto", "reference", "batched", "varlen")
QUICK_GELU = 1.702  # QuickGELU(x) = x * sigmoid(1.702 x)


@dataclass(frozen=True)
class AttentionPlan:
    """How the tower's attention runs for one batch of items (made once per forward).

    Batched calls: ``groups`` lists ``(pieces, length)`` per call over the tokens taken in ``order`` (None: the
    tokens as they are, one group); ``inverse`` puts the outputs back. Variable-length: ``kernel`` with
    ``cu_seqlens`` [pieces + 1] (int32) and ``max_len``."""

    groups: tuple[tuple[int, int], ...] = ()
    order: torch.Tensor | None = None
    inverse: torch.Tensor | None = None
    kernel: Callable | None = None
    cu_seqlens: torch.Tensor | None = None
    max_len: int = 0


def attention_plan(grid_thw: torch.Tensor, mode: str, device: torch.device, dtype: torch.dtype,
                   kernel: Callable | None = None) -> AttentionPlan:
    """grid_thw [V, 3] (t, h, w patches per item) -> the plan for ``mode`` (``auto``, ``batched`` or ``varlen``).

    Item i has t_i pieces of h_i * w_i tokens each, laid out item after item. ``kernel`` overrides the
    variable-length kernel (tests pass ``vamba.models.attention.varlen_ref`` to run that path on the CPU)."""
    if mode not in VISION_ATTENTION or mode == "reference":
        raise ValueError(f"attention_plan mode must be auto, batched or varlen, got {mode!r}")
    items = [(t, h * w) for t, h, w in grid_thw.tolist()]
    lengths = sorted({n for _, n in items})
    half_cuda = device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
    if kernel is None and half_cuda:
        kernel = varlen_kernel()
    if mode == "varlen" or (mode == "auto" and len(lengths) > 1 and kernel is not None):
        if kernel is None:
            raise ValueError(f"vision_attention='varlen' needs flash-attn or torch.nn.attention.varlen on CUDA in "
                             f"fp16/bf16; got {device.type} {dtype}, torch {torch.__version__}")
        pieces = [n for t, n in items for _ in range(t)]
        cu = torch.tensor([0, *pieces], dtype=torch.int32).cumsum(0, dtype=torch.int32)
        return AttentionPlan(kernel=kernel, cu_seqlens=cu.to(device, non_blocking=True), max_len=max(pieces))
    if len(lengths) == 1:
        return AttentionPlan(groups=((sum(t for t, _ in items), lengths[0]),))
    starts, offset = [], 0
    for t, n in items:
        starts.append(offset)
        offset += t * n
    groups, order = [], []
    for length in lengths:
        members = [(start, t) for (t, n), start in zip(items, starts) if n == length]
        groups.append((sum(t for _, t in members), length))
        order += [torch.arange(start, start + t * length) for start, t in members]
    order_t = torch.cat(order).to(device)
    return AttentionPlan(groups=tuple(groups), order=order_t, inverse=torch.argsort(order_t))


def vision_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan,
                     scale: float) -> torch.Tensor:
    """Bidirectional attention within each piece: q, k, v [S, H, d] (any strides, last dim contiguous)
    -> [S, H, d]."""
    if plan.kernel is not None:
        q, k, v = (t.contiguous() for t in (q, k, v))
        return plan.kernel(q, k, v, plan.cu_seqlens, plan.cu_seqlens, plan.max_len, plan.max_len, False, scale)
    if plan.order is not None:
        q, k, v = (t.index_select(0, plan.order) for t in (q, k, v))
    outs, start = [], 0
    for pieces, length in plan.groups:
        part = slice(start, start + pieces * length)
        qs, ks, vs = (t[part].unflatten(0, (pieces, length)).transpose(1, 2) for t in (q, k, v))
        outs.append(F.scaled_dot_product_attention(qs, ks, vs, scale=scale).transpose(1, 2).flatten(0, 1))
        start += pieces * length
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return out if plan.inverse is None else out.index_select(0, plan.inverse)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half rotary embedding: x [..., d]; cos, sin broadcastable to x, ``sin`` carrying the rotate-half
    sign (``[-sin, sin]`` over the two halves). Computed in the promoted dtype of x and cos, returned in x's."""
    half = x.shape[-1] // 2
    swapped = torch.cat((x[..., half:], x[..., :half]), dim=-1)
    return (x * cos).addcmul_(swapped, sin).to(x.dtype)


def _attention_inputs(x: torch.Tensor, norm_w: torch.Tensor, norm_b: torch.Tensor, eps: float,
                      qkv_w: torch.Tensor, qkv_b: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      heads: int, fp8: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [S, D] -> q, k (rotated), v [S, H, D / H] (views of two buffers, token stride 2D and 3D). ``fp8``: the
    GEMM in FP8 (vamba.ops.fp8)."""
    s, d = x.shape
    h = F.layer_norm(x, (d,), norm_w, norm_b, eps)
    qkv = (fp8_linear if fp8 else F.linear)(h, qkv_w, qkv_b).view(s, 3, heads, d // heads)
    qk = rotary(qkv[:, :2], cos, sin)
    return qk[:, 0], qk[:, 1], qkv[:, 2]


def _output_and_mlp(x: torch.Tensor, o: torch.Tensor, proj_w: torch.Tensor, proj_b: torch.Tensor,
                    norm_w: torch.Tensor, norm_b: torch.Tensor, eps: float, fc1_w: torch.Tensor,
                    fc1_b: torch.Tensor, fc2_w: torch.Tensor, fc2_b: torch.Tensor,
                    act: nn.Module | None, fp8: bool = False) -> torch.Tensor:
    """x [S, D] + proj(o [S, H, D / H]), then + MLP(LayerNorm(.)). ``act`` None: QuickGELU, folded as
    ``fc2(silu(1.702 fc1(h)) / 1.702)`` with the scales inside the GEMMs. ``fp8``: the GEMMs in FP8."""
    s, d = x.shape
    if fp8:
        x = x + fp8_linear(o.reshape(s, d), proj_w, proj_b)
        h = F.layer_norm(x, (d,), norm_w, norm_b, eps)
        y = fp8_linear(h, fc1_w, fc1_b)
        y = F.silu(y * QUICK_GELU) / QUICK_GELU if act is None else act(y)
        return x + fp8_linear(y, fc2_w, fc2_b)
    x = x + F.linear(o.reshape(s, d), proj_w, proj_b)
    h = F.layer_norm(x, (d,), norm_w, norm_b, eps)
    if act is None:
        y = torch.addmm(fc1_b * QUICK_GELU, h, fc1_w.t(), alpha=QUICK_GELU)
        y = F.silu(y, inplace=not y.requires_grad)
        return x + torch.addmm(fc2_b, y, fc2_w.t(), alpha=1.0 / QUICK_GELU)
    return x + F.linear(act(F.linear(h, fc1_w, fc1_b)), fc2_w, fc2_b)


@functools.cache
def _compiled(fn: Callable) -> Callable:
    return torch.compile(fn)


def _dynamic_tokens(*tensors: torch.Tensor) -> None:
    """Compile the blocks once for any number of tokens: dim 0 (tokens) of the compiled halves' inputs is symbolic
    from the first call. A video streamed in pieces (vamba.inference.streaming) meets several token counts (its
    last piece is shorter; other videos other lengths); torch.compile would otherwise compile the first shape
    statically and recompile on the second. The feature dims stay static (Inductor's reductions specialise on them)."""
    for t in tensors:
        torch._dynamo.maybe_mark_dynamic(t, 0)


def vision_block(block: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, plan: AttentionPlan,
                 compile: bool = False, fp8: bool = False) -> torch.Tensor:
    """transformers' ``Qwen2VLVisionBlock`` computed from its weights: x [S, D] -> [S, D]; ``fp8``: its four GEMMs
    in FP8 (vamba.ops.fp8)."""
    attn, mlp = block.attn, block.mlp
    pre = _compiled(_attention_inputs) if compile else _attention_inputs
    post = _compiled(_output_and_mlp) if compile else _output_and_mlp
    if compile:
        _dynamic_tokens(x, cos, sin)
    q, k, v = pre(x, block.norm1.weight, block.norm1.bias, block.norm1.eps, attn.qkv.weight, attn.qkv.bias,
                  cos, sin, attn.num_heads, fp8)
    o = vision_attention(q, k, v, plan, attn.scaling)
    if compile:
        _dynamic_tokens(o)
    quick = isinstance(mlp.act, QuickGELUActivation) and mlp.fc1.bias is not None and mlp.fc2.bias is not None
    return post(x, o, attn.proj.weight, attn.proj.bias, block.norm2.weight, block.norm2.bias, block.norm2.eps,
                mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias, None if quick else mlp.act, fp8)


def frame_pieces(pixel_values: torch.Tensor, grid_thw: torch.Tensor,
                 piece_frames: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut a batch of visual items into pieces of at most ``piece_frames`` frames (``piece_frames // 2`` temporal
    patches; 0: one piece), splitting items along time: pixel_values [P, 1176], grid_thw [V, 3] -> [(pixels, grid)]
    in order. The tower's output over the pieces, concatenated, is its output over the batch: attention, the
    rotary positions and the 2x2 merger all stay inside one temporal patch."""
    limit = piece_frames // 2
    if limit <= 0 or int(grid_thw[:, 0].sum()) <= limit:
        return [(pixel_values, grid_thw)]
    pieces, grids, start, room = [], [], 0, limit
    rows = 0  # first patch row of the piece being filled
    for t, h, w in grid_thw.tolist():
        while t > 0:
            take = min(t, room)
            grids.append((take, h, w))
            start += take * h * w
            t, room = t - take, room - take
            if room == 0:
                pieces.append((pixel_values[rows:start], grid_thw.new_tensor(grids)))
                grids, rows, room = [], start, limit
    if grids:
        pieces.append((pixel_values[rows:start], grid_thw.new_tensor(grids)))
    return pieces


class VambaVisionTower(Qwen2VisionTransformerPretrainedModel):
    """transformers' Qwen2-VL vision tower with the fast forward of this module (module docstring)."""

    def forward(self, hidden_states: torch.Tensor, grid_thw: torch.Tensor, attention: str = "auto",
                compile: bool = False, fp8: bool = False, **kwargs) -> BaseModelOutputWithPooling:
        """hidden_states [P, C * T * patch^2] patches, grid_thw [V, 3] -> last_hidden_state [P, D] (the blocks'
        output) and pooler_output [P / merge^2, hidden] (the merger's), as transformers' forward returns them."""
        if attention not in VISION_ATTENTION:
            raise ValueError(f"vision_attention must be one of {VISION_ATTENTION}, got {attention!r}")
        if attention == "reference" or kwargs or is_zero3(self.patch_embed.proj.weight):
            if fp8:
                raise ValueError("fp8 runs in the vision tower's fast forward: not with vision_attention=reference, "
                                 "transformers' output recording or DeepSpeed ZeRO-3 (partitioned weights)")
            return super().forward(hidden_states, grid_thw, **kwargs)
        weight = self.patch_embed.proj.weight
        x = F.linear(hidden_states.reshape(-1, weight[0].numel()).to(weight.dtype), weight.flatten(1),
                     self.patch_embed.proj.bias)
        plan = attention_plan(grid_thw, attention, x.device, x.dtype)
        cos, sin = self.rotary_pos_emb(x, get_vision_position_ids(grid_thw, self.spatial_merge_size))  # [S, d] fp32
        half = cos.shape[-1] // 2
        sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)
        rope_dtype = torch.float32 if compile else x.dtype  # compiled: float32 inside the fused kernel, no copies
        cos, sin = (t.to(rope_dtype)[:, None, None] for t in (cos, sin))  # [S, 1 (q/k), 1 (heads), d]
        for block in self.blocks:
            if block.gradient_checkpointing and self.training and torch.is_grad_enabled():
                run = functools.partial(vision_block, block, cos=cos, sin=sin, plan=plan, compile=compile, fp8=fp8)
                x = block._gradient_checkpointing_func(run, x)  # as transformers' blocks: only x positional
            else:
                x = vision_block(block, x, cos, sin, plan=plan, compile=compile, fp8=fp8)
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=self.merger(x))
