"""Model FLOPs of VAMBA (and, for comparison, transformers' Qwen2-VL), counted analytically: matmuls as 2 x
multiply-adds, attention as its two matmuls, elementwise work not counted. The numerators of model FLOPs utilisation,
for the benchmarks (``vamba.bench``) and for ``vamba train``'s per-step ``mfu`` (``step_flops``). Recomputation by
gradient checkpointing is not model work and is not counted."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

from vamba.models.names import NEW_MODULES, matches_any


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


# -- a training step ---------------------------------------------------------------------------------------------
PART = ("no", "adapter", "full")  # how a part trains: frozen, through LoRA adapters, or in full


def _video_module(name: str) -> bool:
    """The modules VAMBA adds to Qwen2-VL's LLM: they work on the video tokens (cross-attention K/V, Mamba-2)."""
    return matches_any(name, NEW_MODULES)


def trained_parts(named_parameters: Iterable[tuple[str, torch.nn.Parameter]]) -> dict[str, str]:
    """How each part of VAMBA trains, from ``requires_grad``: ``{"text": ..., "video": ..., "vision": ...}`` with
    values of ``PART``. text: the weights shared with Qwen2-VL's LLM (embeddings, self-attention, MLP, lm_head);
    video: cross-attention, Mamba-2 blocks and alpha; vision: the vision tower's blocks (its merger is not counted).
    A LoRA adapter (``lora_`` in the name) makes its part ``adapter`` unless the part also trains in full."""
    parts = {"text": "no", "video": "no", "vision": "no"}
    for name, p in named_parameters:
        if not p.requires_grad:
            continue
        if "visual." in name:
            part = "no" if ".merger." in name else "vision"
        else:
            part = "video" if _video_module(name) else "text"
        if part != "no":
            how = "adapter" if "lora_" in name else "full"
            parts[part] = max(parts[part], how, key=PART.index)
    return parts


def train_flops(forward: float, video_forward: float, parts: Mapping[str, str]) -> float:
    """Forward + backward FLOPs of the LLM given its forward FLOPs (``forward``) and the part of them spent on video
    tokens (``video_forward``: cross-attention K/V, Mamba-2). Backward = activation gradients back to the earliest
    trained part (everything when the video stream trains, the text side only when only text weights train) plus
    weight gradients of the parts trained in full (as much again as their forward); adapters' weight gradients are
    negligible and not counted. Whole LLM: 3x forward; stage 1 (video modules only): 2x forward + the video part."""
    text_forward = forward - video_forward
    activations = forward if parts["video"] != "no" else text_forward if parts["text"] != "no" else 0.0
    weights = (text_forward if parts["text"] == "full" else 0.0) + (video_forward if parts["video"] == "full" else 0.0)
    return forward + activations + weights


def _samples(batch: Mapping[str, torch.Tensor]) -> list[tuple[int, int, int]]:
    """(text tokens, merged video tokens, positions with a target) of every sample of a ``vamba.data`` batch
    (docs/batch.md: packed rows hold several samples, told apart by ``text_seq_idx`` / ``visual_seq_idx``)."""
    mask = batch["attention_mask"].bool()
    targets = torch.zeros_like(mask)
    if batch.get("labels") is not None:
        targets[:, :-1] = batch["labels"][:, 1:] != -100  # the position predicting a labelled next token
    rows = mask.shape[0]
    seq = batch.get("text_seq_idx")
    seq = torch.where(mask, 0, -1) if seq is None else seq.long()
    grid = batch.get("grid_thw")
    video: dict[tuple[int, int], int] = {}
    if grid is not None and len(grid):
        merged = grid.prod(-1) // 4
        vseq = batch.get("visual_seq_idx")
        for i, row in enumerate(batch["visual_row"].tolist()):
            key = (row, 0 if vseq is None else int(vseq[i]))
            video[key] = video.get(key, 0) + int(merged[i])
    out = []
    for r in range(rows):
        for s in sorted(set(seq[r].tolist()) - {-1}):
            here = seq[r] == s
            out.append((int(here.sum()), video.get((r, s), 0), int((targets[r] & here).sum())))
    return out


def step_flops(config, batch: Mapping[str, torch.Tensor], parts: Mapping[str, str]) -> float:
    """Model FLOPs of one forward+backward of VAMBA (``config``: ``VambaConfig``) on ``batch``, the vision tower
    included (forward only while its blocks are frozen), with the parts trained as ``parts`` (``trained_parts``)."""
    forward = video_forward = 0.0
    for text, video, logits in _samples(batch):
        forward += vamba_llm_flops(config, video, text, logits)
        video_forward += vamba_llm_flops(config, video, 0, 0)
    vision = 0.0
    grid = batch.get("grid_thw")
    for t, h, w in ([] if grid is None else grid.tolist()):
        vision += vision_flops(config.vision_config, t, (h, w))
    return train_flops(forward, video_forward, parts) + vision * (3 if parts["vision"] == "full" else 1)


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
