"""Greedy decoding against a cached video without per-token overhead: a static text KV cache and one decoding step
that a CUDA graph replays (``greedy_decode``).

``generate`` pays, per token, for transformers' Python around the model (logits processors, stopping criteria,
kwargs updates, a growing ``DynamicCache`` and its concatenations) and for our ``forward``'s mask and segment checks
(host reads of device tensors): with 28 layers that caps a 7B model at a few tens of tokens per second whatever the
GPU. Here the text K/V of every layer live in buffers allocated once for prompt + ``max_new_tokens``
(``StaticTextCache``); a decoding step reads fixed tensors (the token, its position, the write index, the key mask)
and writes the next logits into a fixed tensor, so on CUDA it is captured once as a ``torch.cuda.CUDAGraph`` and
replayed per token: one launch per token and one host read (the new token, for eos and the streamer). On the CPU
the same step runs eagerly.

The reference is ``model.generate(do_sample=False)``: same tokens (tests/models/test_fast_decode.py, float32 on the
CPU; tests/gpu/test_fast_decode_gpu.py in bf16 with the graph). The prompt is prefilled by ``forward`` (into the
static buffers), so its logits are generate's; each step then computes what generate's step computes, masking the
unwritten part of the buffers instead of slicing them. Finished rows are fed the pad token, as generate does.
Greedy only: sampling stays with ``generate`` (its logits processors and random draws are not reproduced here).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vamba.models.attention import resolve_backend
from vamba.models.cache import VideoCache
from vamba.models.decode_attention import use_split
from vamba.models.decoder import LayerInputs
from vamba.models.positions import text_segments

# generation_config fields that add a logits processor or a stopping rule to greedy decoding, with their neutral
# values: a checkpoint whose generation_config sets one otherwise decodes through generate (``unsupported``).
NEUTRAL_GENERATION = {
    "repetition_penalty": (None, 1.0), "encoder_repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,), "min_length": (None, 0), "min_new_tokens": (None, 0), "sequence_bias": (None,),
    "forced_bos_token_id": (None,), "forced_eos_token_id": (None,), "exponential_decay_length_penalty": (None,),
    "suppress_tokens": (None,), "begin_suppress_tokens": (None,), "guidance_scale": (None, 1.0), "num_beams": (None, 1),
    "renormalize_logits": (None, False), "remove_invalid_values": (None, False), "max_time": (None,),
    "stop_strings": (None,), "watermarking_config": (None,), "low_memory": (None, False),
}


def unsupported(model) -> list[str]:
    """The settings of ``model.generation_config`` that ``greedy_decode`` does not reproduce (empty: none)."""
    config = getattr(model, "generation_config", None)
    found = []
    for key, neutral in NEUTRAL_GENERATION.items():
        value = getattr(config, key, None)
        if value not in neutral:
            found.append(f"{key}={value!r}")
    return found


class StaticTextCache:
    """Per layer text keys and values ``[B, Hkv, capacity, head_dim]``, allocated once, filled left to right.

    Used as ``forward``'s text cache for the prompt (``update`` writes at ``length`` and returns the filled part, as a
    ``DynamicCache`` would), then by the decoding step with ``index`` set (a device tensor ``[1]``: the slot this
    step writes; ``update`` returns the whole buffers, whose unwritten slots the step masks)."""

    def __init__(self, layers: int, batch: int, heads: int, head_dim: int, capacity: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        shape = (batch, heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.capacity = capacity
        self.length = 0  # tokens written by forward (the prompt)
        self.index: torch.Tensor | None = None

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self.index is not None:
            keys.index_copy_(2, self.index, k)
            values.index_copy_(2, self.index, v)
            return keys, values
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"StaticTextCache: {end} tokens do not fit its {self.capacity}")
        keys[:, :, self.length:end] = k
        values[:, :, self.length:end] = v
        return keys[:, :, :end], values[:, :, :end]


class _Step:
    """One decoding step over fixed tensors: ``tokens [B, 1]`` at ``positions [B]`` -> ``logits [B, V]`` (float32),
    writing its K/V at ``cache.index`` and marking that slot in ``key_mask [B, capacity]``."""

    def __init__(self, model, cache: StaticTextCache, video_cache: VideoCache, key_mask: torch.Tensor,
                 positions: torch.Tensor) -> None:
        self.model, self.cache, self.video = model, cache, video_cache
        self.key_mask, self.positions = key_mask, positions
        b = key_mask.shape[0]
        self.tokens = torch.zeros(b, 1, dtype=torch.long, device=key_mask.device)
        cache.index = torch.zeros(1, dtype=torch.long, device=key_mask.device)
        self.q_seg = torch.zeros(b, 1, dtype=torch.long, device=key_mask.device)
        segments = video_cache.segments
        self.cross_k = None if bool((segments == 0).all()) else segments  # as forward: nothing to mask
        self.logits: torch.Tensor | None = None

    def __call__(self) -> torch.Tensor:
        model, cache = self.model, self.cache
        text = model.model.embed_tokens(self.tokens)
        self.key_mask.index_fill_(1, cache.index, 1)
        rope = model.model.rotary_emb(text, self.positions[None, :, None].expand(3, -1, -1))
        inputs = LayerInputs(rope, None, self.q_seg, text_segments(self.key_mask, None),
                             None if self.cross_k is None else self.q_seg, self.cross_k, None, cache,
                             model.config.attention_backend, decode=model.config.decode_attention)
        for i, layer in enumerate(model.model.layers):
            text, _, _, _ = layer(text, None, inputs, (self.video.keys[i], self.video.values[i]))
        self.logits = model.lm_head(model.model.norm(text)[:, -1]).float()
        return self.logits


def graph_capturable(model, video_cache: VideoCache, batch: int) -> bool:
    """Whether the step has no host synchronisation: the cross-attention of a decoding query goes to the split path
    or a kernel without unpadding (the varlen kernels count tokens on the host)."""
    k = video_cache.keys[0]
    text = model.config.text_config
    q = torch.empty(batch, text.num_attention_heads, 1, k.shape[-1], dtype=k.dtype, device=k.device)
    if use_split(model.config.decode_attention, q, k):
        return True
    masked = not bool((video_cache.segments == 0).all())
    return resolve_backend(model.config.attention_backend, q, masked, has_cache=False) in ("sdpa", "eager",
                                                                                         "eager_fused")


@torch.no_grad()
def greedy_decode(model, input_ids: torch.Tensor, video_cache: VideoCache, max_new_tokens: int,
                  eos_token_id: int | Sequence[int] | None, pad_token_id: int | None = None,
                  attention_mask: torch.Tensor | None = None, min_new_tokens: int = 0, streamer: Any = None,
                  cuda_graph: bool | None = None, scores: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Greedy decoding (module docstring): ``input_ids [B, n]`` (left padded, ``attention_mask [B, n]``) asked about
    ``video_cache`` (B rows, or one row every prompt reads) -> ``[B, n + generated]`` as ``generate`` returns it
    (eos included, pad after a row's eos). ``cuda_graph``: replay the step in a CUDA graph (default: on CUDA when
    ``graph_capturable``). ``streamer``: a transformers streamer (``put`` the prompt, then each token; ``end``).
    ``scores``: a list that gets each step's float32 logits ``[B, V]`` (copies, before the min_new_tokens mask:
    generate's ``output_logits``)."""
    if model.context_parallel is not None:
        raise ValueError("greedy_decode runs in one process; call set_context_parallel(None) first")
    b, n = input_ids.shape
    device = input_ids.device
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    eos = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    if eos and pad_token_id is None:
        pad_token_id = eos[0]  # as generate
    eos_ids = torch.tensor(eos, dtype=torch.long, device=device)
    text = model.config.text_config
    cache = StaticTextCache(text.num_hidden_layers, b, text.num_key_value_heads, text.hidden_size //
                            text.num_attention_heads, n + max_new_tokens, model.lm_head.weight.dtype, device)
    out = model(input_ids=input_ids, attention_mask=attention_mask, video_cache=video_cache, cache=cache,
                use_cache=True, logits_to_keep=1)
    cache.length = n
    logits = out.logits[:, -1].float()
    key_mask = torch.zeros(b, n + max_new_tokens, dtype=torch.long, device=device)
    key_mask[:, :n] = attention_mask
    positions = attention_mask.long().sum(-1) - 1  # the last prompt token's; each step feeds the next one
    step = _Step(model, cache, video_cache, key_mask, positions)
    if cuda_graph is None:
        cuda_graph = device.type == "cuda" and graph_capturable(model, video_cache, b)
    graph = None
    if streamer is not None:
        streamer.put(input_ids.cpu())
    tokens = [input_ids]
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    for i in range(max_new_tokens):
        if scores is not None:
            scores.append(logits.clone())
        if i < min_new_tokens and eos:
            logits[:, eos_ids] = float("-inf")
        new = logits.argmax(-1)
        if eos:
            new = torch.where(finished, pad_token_id, new)
            finished |= torch.isin(new, eos_ids)
        tokens.append(new[:, None])
        if streamer is not None:
            streamer.put(new.cpu())
        if i == max_new_tokens - 1 or (eos and bool(finished.all())):
            break
        step.tokens.copy_(new[:, None])
        cache.index.fill_(n + i)
        positions.add_(1)
        if not cuda_graph:
            logits = step()
            continue
        if graph is None:
            graph = _capture(step)
        graph.replay()
        logits = step.logits
    if streamer is not None:
        streamer.end()
    return torch.cat(tokens, 1)


def _capture(step: _Step) -> torch.cuda.CUDAGraph:
    """Warm the step up on a side stream (lazy initialisations, cuBLAS workspaces), then capture it. Running the step
    twice more writes the same K/V into the same slot: the graph's first replay repeats it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph
