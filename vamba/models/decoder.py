"""The VAMBA decoder layer: text self-attention + cross-attention to the video stream, Mamba-2 on video.

Per layer (paper section 3; docs/model.md), with text states ``x`` [B, N, D] and video states
``v`` [B, M, D] entering the layer:

    h   = RMSNorm(x)
    x'  = x + a*SelfAttn(h) + (1 - a)*CrossAttn(q=h, kv=v)       (a clamped to [0, 1]; or x + SA + CA)
    x'' = x' + MLP(RMSNorm(x'))                                   (SwiGLU)
    v'  = v + Mixer(RMSNorm(v))                                   (Mamba-2 block, linear in M)

Weights and module names are those of transformers' Qwen2-VL (``Qwen2VLAttention``, ``Qwen2MLP``,
``Qwen2VLRMSNorm``) and of the released checkpoint (``cross_attn``, ``alpha``, ``vision_mixer``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.models.qwen2_vl.modeling_qwen2_vl import (
    Qwen2MLP,
    Qwen2VLAttention,
    Qwen2VLRMSNorm,
    apply_rotary_pos_emb,
    rotate_half,
)

from vamba.models.attention import attention
from vamba.models.configuration import VambaConfig
from vamba.models.decode_attention import split_decode, use_split
from vamba.models.mamba2 import Mamba2Block, Mamba2State
from vamba.models.selective_scan import SelectiveScanBlock
from vamba.models.sharding import VideoShardHooks


@dataclass
class LayerInputs:
    """What every layer of one forward shares (built once by the model).

    text_rope:   (cos, sin) [B, N, head_dim] text M-RoPE
    video_rope:  (cos, sin) [B, M, head_dim] video 3-D M-RoPE, or None (``cross_attn_use_position_embeddings`` off)
    self_q_seg / self_k_seg: [B, N] / [B, past + N] self-attention segments, or None (nothing to mask)
    cross_q_seg / cross_k_seg: [B, N] / [B, M] cross-attention segments, or None
    video_seq_idx: [B, M] int32 Mamba-2 reset ids for packed rows, or None
    text_cache: transformers ``Cache`` for text K/V (generation), or None
    backend: attention backend name (vamba.models.attention)
    video_shard: context parallelism (vamba.models.sharding): the video stream is this rank's slice and the
        Mamba-2 blocks and cross-attention run through these hooks; None in a single process
    decode: ``VambaConfig.decode_attention`` (vamba.models.decode_attention): how decoding queries read a cached
        video
    """

    text_rope: tuple[torch.Tensor, torch.Tensor]
    video_rope: tuple[torch.Tensor, torch.Tensor] | None
    self_q_seg: torch.Tensor | None
    self_k_seg: torch.Tensor | None
    cross_q_seg: torch.Tensor | None
    cross_k_seg: torch.Tensor | None
    video_seq_idx: torch.Tensor | None
    text_cache: object | None
    backend: str
    video_shard: VideoShardHooks | None = None
    decode: str = "reference"


class VambaSelfAttention(Qwen2VLAttention):
    """Causal text self-attention: Qwen2-VL's projections and M-RoPE, our masking/backends."""

    def forward(self, hidden: torch.Tensor, inputs: LayerInputs) -> torch.Tensor:  # type: ignore[override]
        b, n, _ = hidden.shape
        q = self.q_proj(hidden).view(b, n, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden).view(b, n, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden).view(b, n, -1, self.head_dim).transpose(1, 2)
        cos, sin = inputs.text_rope
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if inputs.text_cache is not None:
            k, v = inputs.text_cache.update(k, v, self.layer_idx)
        out = attention(q, k, v, causal=True, q_seg=inputs.self_q_seg, k_seg=inputs.self_k_seg,
                        backend=inputs.backend, scale=self.scaling)
        return self.o_proj(out.reshape(b, n, -1))


class VambaCrossAttention(Qwen2VLAttention):
    """Text queries read the video stream. Same shapes and names as self-attention (so it can start as a copy).

    No rotary embedding unless ``cross_attn_use_position_embeddings``: then queries get the text M-RoPE and
    keys the video's 3-D (t, h, w) M-RoPE, as the released code does.
    """

    def __init__(self, config, layer_idx: int, use_rope: bool) -> None:
        super().__init__(config, layer_idx)
        self.is_causal = False
        self.use_rope = use_rope

    def project_kv(self, video: torch.Tensor, video_rope: tuple[torch.Tensor, torch.Tensor] | None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """video [B, M, D] -> keys, values [B, Hkv, M, head_dim] (the part a ``VideoCache`` stores)."""
        b, m, _ = video.shape
        k = self.k_proj(video).view(b, m, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(video).view(b, m, -1, self.head_dim).transpose(1, 2)
        if self.use_rope:
            cos, sin = video_rope
            k = k * cos.unsqueeze(1) + rotate_half(k) * sin.unsqueeze(1)
        return k, v

    def forward(self, hidden: torch.Tensor, k: torch.Tensor, v: torch.Tensor,  # type: ignore[override]
                inputs: LayerInputs) -> torch.Tensor:
        b, n, _ = hidden.shape
        q = self.q_proj(hidden).view(b, n, -1, self.head_dim).transpose(1, 2)
        if self.use_rope:
            cos, sin = inputs.text_rope
            q = q * cos.unsqueeze(1) + rotate_half(q) * sin.unsqueeze(1)
        if inputs.video_shard is not None:  # keys/values of this rank's video slice: combined over the ranks
            out = inputs.video_shard.cross_attention(q, k, v, inputs.cross_q_seg, inputs.cross_k_seg, self.scaling,
                                                     inputs.backend)
        elif use_split(inputs.decode, q, k):  # few decoding queries over a long cached video
            out = split_decode(q, k, v, q_seg=inputs.cross_q_seg, k_seg=inputs.cross_k_seg, scale=self.scaling)
        else:
            k_seg = inputs.cross_k_seg
            if k.shape[0] != b:  # one cached video shared by every row (VideoCache of one row): views, no copy
                k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
                k_seg = None if k_seg is None else k_seg.expand(b, -1)
            out = attention(q, k, v, causal=False, q_seg=inputs.cross_q_seg, k_seg=k_seg,
                            backend=inputs.backend, scale=self.scaling)
        return self.o_proj(out.reshape(b, n, -1))


class _StraightThroughClamp(torch.autograd.Function):
    """clamp(x, 0, 1) forward, identity backward: the released code clamps alpha in place before use, so its
    value is always in [0, 1] while gradients still reach it; this does the same without mutating a parameter
    inside forward (which ZeRO-3 partitioning and activation recomputation would not see consistently)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class VambaDecoderLayer(nn.Module):
    """One hybrid layer (module docstring). ``forward`` returns the new text and video states."""

    def __init__(self, config: VambaConfig, layer_idx: int) -> None:
        super().__init__()
        text = config.text_config
        self.layer_idx = layer_idx
        self.self_attn = VambaSelfAttention(text, layer_idx)
        self.cross_attn = VambaCrossAttention(text, layer_idx, use_rope=config.cross_attn_use_position_embeddings)
        self.mlp = Qwen2MLP(text)
        self.input_layernorm = Qwen2VLRMSNorm(text.hidden_size, eps=text.rms_norm_eps)
        self.post_attention_layernorm = Qwen2VLRMSNorm(text.hidden_size, eps=text.rms_norm_eps)
        self.alpha = nn.Parameter(torch.full((1,), 0.5)) if config.use_alpha_balancing else None
        self.vision_mixer: Mamba2Block | SelectiveScanBlock | None = None
        if config.mamba_enabled:
            self.vision_mixer = (Mamba2Block(config.mamba_config()) if config.vision_mixer_kind == "mamba2"
                                 else SelectiveScanBlock(config.selective_scan_config()))
        self.cross_attn_use_layer_norm = config.cross_attn_use_layer_norm
        # The last layer's updated video states would feed nothing: its Mamba-2 block is skipped.
        self.is_last = layer_idx == text.num_hidden_layers - 1

    def video_step(self, video: torch.Tensor, inputs: LayerInputs, state: Mamba2State | None = None,
                   return_state: bool = False) -> tuple[torch.Tensor, ...]:
        """Video stream of this layer: cross-attention K/V of the entering states, then the Mamba-2 update.

        video [B, M, D] -> (k, v [B, Hkv, M, head_dim], next video [B, M, D]).
        Streaming (``return_state``): the Mamba-2 block continues from ``state`` (None = the video's start) and
        its state after this piece comes back as a fourth element (None where the layer has no Mamba-2 update).
        """
        video, k, v = self.video_kv(video, inputs)
        return (k, v, *self.video_update(video, inputs, state, return_state))

    def video_kv(self, video: torch.Tensor, inputs: LayerInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The first half of ``video_step``: the video states that go on (normed when ``cross_attn_use_layer_norm``)
        and the cross-attention K/V of this layer."""
        if self.cross_attn_use_layer_norm:
            # As released: the normed states also replace the stream that goes on to the Mamba-2 block.
            video = self.input_layernorm(video)
        k, v = self.cross_attn.project_kv(video, inputs.video_rope)
        return video, k, v

    def video_update(self, video: torch.Tensor, inputs: LayerInputs, state: Mamba2State | None = None,
                     return_state: bool = False) -> tuple[torch.Tensor, ...]:
        """The second half of ``video_step``: the Mamba-2 update -> (next video[, state])."""
        if self.vision_mixer is not None and not self.is_last:
            if inputs.video_shard is not None:
                if return_state:
                    raise ValueError("streaming states and context parallelism do not combine")
                video = inputs.video_shard.mamba_block(self.vision_mixer, video)
            elif return_state:
                video, state = self.vision_mixer(video, seq_idx=inputs.video_seq_idx, state=state, return_state=True)
            else:
                video = self.vision_mixer(video, seq_idx=inputs.video_seq_idx)
        elif return_state:
            state = None
        return (video, state) if return_state else (video,)

    def forward(self, text: torch.Tensor, video: torch.Tensor | None, inputs: LayerInputs,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """text [B, N, D], video [B, M, D] (None when ``kv`` comes from a VideoCache).

        Returns (text [B, N, D], next video [B, M, D] or None, k, v)."""
        # The video stream's K/V first, its Mamba-2 update last: under gradient checkpointing the recomputation in
        # backward stops after the last tensor backward needs (torch's early stop), so when nothing of the video
        # stream trains (only the weights shared with Qwen2-VL) the Mamba-2 blocks are not run again at all.
        if kv is None:
            video, k, v = self.video_kv(video, inputs)
        else:
            k, v = kv
        residual = text
        h = self.input_layernorm(text)
        sa = self.self_attn(h, inputs)
        ca = self.cross_attn(h, k, v, inputs)
        if self.alpha is not None:
            a = _StraightThroughClamp.apply(self.alpha).to(sa.dtype)
            text = residual + a * sa + (1 - a) * ca
        else:
            text = residual + sa + ca
        text = text + self.mlp(self.post_attention_layernorm(text))
        if kv is None:
            (video,) = self.video_update(video, inputs)
        return text, video, k, v
