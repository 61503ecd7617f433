"""Generation: the video encoded once into a ``VideoCache`` (whole, or piece by piece for streaming), and the hooks
through which transformers' ``generate`` decodes the text against that cache (``VambaGenerationMixin``, a base of
``VambaForConditionalGeneration``; it uses the model's video stream and decoder layers, vamba.models.modeling).

Decoding never touches the video stream again: the prefill step encodes each video once (its cross-attention K/V
in every layer), every later step reads the cache; ``num_return_sequences`` / beams repeat cache rows.
"""
from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationMixin

from vamba.models.cache import VideoCache
from vamba.models.decoder import LayerInputs
from vamba.models.mamba2 import Mamba2State
from vamba.models.outputs import CACHE_NAME, VambaOutput
from vamba.models.positions import VideoLayout
from vamba.models.visual_inputs import PACKED_KEYS, TRANSFORMERS_KEYS


class VambaGenerationMixin(GenerationMixin):
    """``encode_video`` / ``encode_video_piece`` and transformers' generation hooks of ``VambaForConditionalGeneration``."""

    @torch.no_grad()
    def encode_video(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor, visual_row: torch.Tensor | None = None,
                     visual_seq_idx: torch.Tensor | None = None, batch_size: int | None = None,
                     visual_t_offset: torch.Tensor | None = None) -> VideoCache:
        """Run the video stream alone (vision tower, every layer's Mamba-2 block and cross-attention K/V) and
        return the ``VideoCache`` that ``forward`` / ``generate`` accept as ``video_cache=`` (one sample per row)."""
        self._no_context_parallel("encode_video")
        if batch_size is None:
            batch_size = int(visual_row.max().item()) + 1 if visual_row is not None and visual_row.numel() else 1
        dtype = self.lm_head.weight.dtype
        video, layout = self._video_stream(pixel_values, grid_thw, visual_row, visual_seq_idx, batch_size,
                                           packed=False, dtype=dtype,
                                           visual_t_offset=visual_t_offset)
        inputs = self._video_only_inputs(video, layout)
        keys, values = [], []
        for layer in self.model.layers:
            k, v, video = layer.video_step(video, inputs)
            keys.append(k)
            values.append(v)
        return VideoCache(keys, values, layout.segments)

    @torch.no_grad()
    def encode_video_piece(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor,
                           states: list[Mamba2State | None] | None = None, t_offset: int = 0, write_kv=None
                           ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[Mamba2State | None]]:
        """Streaming hook: one piece of ONE video through the vision tower and every layer's video step.

        pixel_values [P, 1176] and grid_thw [1, 3] hold a whole number of temporal patches (the vision tower
        attends within each temporal patch only, so pieces encode exactly as the whole video would).
        ``states``: each layer's Mamba-2 state after the previous piece (None: this piece starts the video);
        ``t_offset``: temporal patches before this piece (its 3-D positions continue from there).
        Returns this piece's keys and values per layer ([1, Hkv, m, head_dim]) and the new states; appending
        the pieces' K/V in order gives ``encode_video`` of the whole video (vamba.inference.streaming).
        ``write_kv(layer, k, v)``: called with each layer's K/V as soon as they exist, which are then not kept
        (the lists come back empty): a piece's K/V of every layer are never alive at once.
        """
        if grid_thw.shape != (1, 3):
            raise ValueError(f"encode_video_piece takes one visual item (grid_thw [1, 3]), got {tuple(grid_thw.shape)}")
        self._no_context_parallel("encode_video_piece")
        video, layout = self._video_stream(pixel_values, grid_thw, None, None, 1, packed=False,
                                           dtype=self.lm_head.weight.dtype)
        layout.positions[0] += t_offset
        inputs = self._video_only_inputs(video, layout)
        states = states if states is not None else [None] * len(self.model.layers)
        keys, values, new_states = [], [], []
        for i, (layer, state) in enumerate(zip(self.model.layers, states)):
            k, v, video, state = layer.video_step(video, inputs, state=state, return_state=True)
            if write_kv is not None:
                write_kv(i, k, v)
            else:
                keys.append(k)
                values.append(v)
            new_states.append(state)
        return keys, values, new_states

    def _no_context_parallel(self, what: str) -> None:
        if self.context_parallel is not None:
            raise ValueError(f"{what} runs in one process; call set_context_parallel(None) first")

    def _video_only_inputs(self, video: torch.Tensor, layout: VideoLayout) -> LayerInputs:
        video_rope = None
        if self.config.cross_attn_use_position_embeddings:
            video_rope = self.model.rotary_emb(video, layout.positions)
        return LayerInputs(None, video_rope, None, None, None, None, layout.seq_idx, None,
                           self.config.attention_backend)

    # -- generation -----------------------------------------------------------------------------------
    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, cache=None,
                                      attention_mask: torch.Tensor | None = None,
                                      video_cache: VideoCache | None = None, use_cache: bool = True,
                                      past_key_values=None, **kwargs: Any) -> dict[str, Any]:
        cache = cache if cache is not None else past_key_values
        past_len = cache.get_seq_length() if cache is not None else 0
        inputs: dict[str, Any] = {
            "input_ids": input_ids[:, past_len:], "attention_mask": attention_mask,
            CACHE_NAME: cache, "use_cache": use_cache, "video_cache": video_cache,
            "logits_to_keep": 1,
        }
        if video_cache is None:  # the prefill step (decoding steps read the video cache only)
            for key in PACKED_KEYS + TRANSFORMERS_KEYS + ("visual_t_offset",):
                inputs[key] = kwargs.get(key)
            types = inputs["mm_token_type_ids"]
            if types is not None:
                if types.shape[1] < input_ids.shape[1]:  # older transformers do not extend it over generated tokens
                    types = torch.cat([types, types.new_zeros(types.shape[0], input_ids.shape[1] - types.shape[1])], 1)
                inputs["mm_token_type_ids"] = types[:, past_len:]
        return inputs

    def _expand_inputs_for_generation(self, expand_size: int = 1, is_encoder_decoder: bool = False,
                                      input_ids: torch.Tensor | None = None, **model_kwargs: Any):
        """num_return_sequences / beams: encode each video once and repeat its cache rows (transformers would
        repeat the flat ``pixel_values`` rows, which are items, not batch rows)."""
        if expand_size == 1:
            return input_ids, model_kwargs
        video_cache = model_kwargs.pop("video_cache", None)
        vision = {k: model_kwargs.pop(k, None) for k in PACKED_KEYS + TRANSFORMERS_KEYS}
        t_offset = model_kwargs.pop("visual_t_offset", None)
        if video_cache is None:
            visual = self._packed_visual_inputs(input_ids, model_kwargs.get("attention_mask"), None, **vision)
            video_cache = self.encode_video(**visual, batch_size=input_ids.shape[0], visual_t_offset=t_offset)
        rows = torch.arange(video_cache.batch_size, device=video_cache.segments.device).repeat_interleave(expand_size)
        model_kwargs["video_cache"] = video_cache.select(rows)
        return super()._expand_inputs_for_generation(expand_size=expand_size, is_encoder_decoder=is_encoder_decoder,
                                                     input_ids=input_ids, **model_kwargs)

    def _update_model_kwargs_for_generation(self, outputs: VambaOutput, model_kwargs: dict[str, Any],
                                            *args: Any, **kwargs: Any) -> dict[str, Any]:
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)
        if outputs.video_cache is not None:
            model_kwargs["video_cache"] = outputs.video_cache.contiguous()  # read by every decoding step
        return model_kwargs
