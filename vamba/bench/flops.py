"""Model FLOPs of the benchmarked steps, counted analytically (matmuls as 2 x multiply-adds; elementwise work not
counted): the numerators of model FLOPs utilisation. Recomputation by gradient checkpointing is not model work."""
from __future__ import annotations

import math


def vamba_llm_flops(config, video_tokens: int, text_tokens: int, logit_tokens: int) -> float:
    """Forward matmul FLOPs of VAMBA's LLM part (vision tower excluded) for one sample.

    Video tokens: cross-attention K/V projections in every layer, the Mamba-2 block in all but the last
    (in/out projections, depthwise conv, SSD: 4*H*P*N per token for the state path plus Q*(G*N + H*P) for the
    chunk-local quadratic part). Text tokens: self-attention q/k/v/o, cross-attention q/o, SwiGLU MLP,
    causal self-attention scores (2*N^2*D) and cross-attention over all video tokens (4*N*M*D), lm_head on the
    positions whose logits are computed.
    """
    t = config.text_config
    d, layers = t.hidden_size, t.num_hidden_layers
    kv = t.num_key_value_heads * (d // t.num_attention_heads)
    m = config.mamba_config()
    h, p, n, g, q = m.nheads, m.headdim, m.d_state, m.ngroups, m.chunk_size
    in_proj = 2 * m.d_inner + 2 * g * n + h
    mamba = 2 * d * in_proj + 2 * m.d_inner * d + 2 * m.conv_dim * m.d_conv + 4 * h * p * n + q * (g * n + h * p)
    video = video_tokens * (layers * 2 * d * 2 * kv + (layers - 1) * mamba)
    per_text = 2 * d * (2 * d + 2 * kv) + 2 * d * 2 * d + 2 * 3 * d * t.intermediate_size
    text = layers * (text_tokens * per_text + 2 * text_tokens**2 * d + 4 * text_tokens * video_tokens * d)
    return float(video + text + 2 * d * t.vocab_size * logit_tokens)


def qwen_llm_flops(config, video_tokens: int, text_tokens: int, logit_tokens: int) -> float:
    """Forward matmul FLOPs of Qwen2-VL's LLM part over video + text tokens (causal attention 2*S^2*D)."""
    t = config.text_config
    d, layers = t.hidden_size, t.num_hidden_layers
    kv = t.num_key_value_heads * (d // t.num_attention_heads)
    s = video_tokens + text_tokens
    per_token = 2 * d * (2 * d + 2 * kv) + 2 * 3 * d * t.intermediate_size
    return float(layers * (s * per_token + 2 * s**2 * d) + 2 * d * t.vocab_size * logit_tokens)


def llm_flops(name: str, config, setup, mode: str, frames: int) -> float:
    """Model FLOPs of one step's LLM part (``setup``: ``vamba.bench.build.Setup``). prefill: forward. train:
    forward + backward (2x forward). train_shared (VAMBA with only Qwen2-VL's LLM weights trainable): no backward
    through the video stream, so 2x the text side only. stage1 (cross-attention, Mamba-2 blocks and alpha trainable):
    activation gradients everywhere (1x forward) and weight gradients of the video stream's modules (1x its forward;
    the text side's cross-attention q/o weights, ~1% at 128 text tokens, are not counted)."""
    count = vamba_llm_flops if name == "vamba" else qwen_llm_flops
    video = setup.video_tokens(frames)
    if mode == "prefill":
        return count(config, video, setup.question_tokens, 1)
    forward = count(config, video, setup.train_tokens, setup.train_tokens)
    if mode in ("train", "train_offload"):
        return 3 * forward
    if mode == "stage1":
        return 2 * forward + count(config, video, 0, 0)
    return forward + 2 * (forward - count(config, video, 0, 0))


def vision_flops(config, pieces: int, grid_hw: tuple[int, int]) -> float:
    """Forward FLOPs of the vision tower for ``pieces`` temporal patches of an h x w patch grid: matmuls (patch
    embedding, qkv, output projection, MLP, merger) as 2 x multiply-adds and attention as 4 * S * L * D
    (scores and weighted sum; L tokens per piece, S tokens in all). Elementwise work is not counted."""
    h, w = grid_hw
    length = h * w
    tokens = pieces * length
    d, hidden = config.embed_dim, config.hidden_size
    mlp = int(d * config.mlp_ratio)
    patch = config.in_channels * config.temporal_patch_size * config.patch_size ** 2
    merged_in = d * config.spatial_merge_size ** 2
    per_block = 2 * d * 3 * d + 2 * d * d + 2 * 2 * d * mlp + 4 * length * d
    merger = 2 * merged_in * merged_in + 2 * merged_in * hidden
    merged_tokens = tokens // config.spatial_merge_size ** 2
    return float(tokens * (2 * patch * d + config.depth * per_block) + merged_tokens * merger)


def ssd_flops(batch: int, seqlen: int, nheads: int, headdim: int, d_state: int, chunk_size: int,
              ngroups: int = 1) -> float:
    """Forward FLOPs of the chunked SSD scan's matmuls (the work a fused kernel must do; ``vamba.bench.mamba2``).

    Counts C.B^T per chunk and group (2 q^2 n per chunk), scores @ x (2 q^2 p per head), chunk states
    (2 q p n per head) and state -> output (2 q p n per head), per chunk; elementwise work is ignored.
    """
    chunks = math.ceil(seqlen / chunk_size)
    q = chunk_size
    per_chunk = 2 * q * q * d_state * ngroups + nheads * (2 * q * q * headdim + 4 * q * headdim * d_state)
    return float(batch * chunks * per_chunk)
