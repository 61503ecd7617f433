"""``VambaForConditionalGeneration``: Qwen2-VL's vision tower feeding a hybrid Mamba-2 / cross-attention decoder.

Module tree (= the released checkpoint's key layout, docs/model.md)::

    visual            transformers' Qwen2VisionTransformerPretrainedModel (ViT + 2x2 patch merger), with the
                      fast forward of vamba.models.vision (VambaVisionTower: same modules and keys)
    model.embed_tokens, model.layers[i] (VambaDecoderLayer), model.norm, model.rotary_emb
    lm_head

Forward consumes the batch contract of docs/batch.md: text and video are two streams; the video
stream is the merged vision tokens of each row's items ([B, M, D]); text tokens read it through
cross-attention. Generation caches the text K/V (transformers ``DynamicCache``) and, once per video,
the cross-attention K/V of every layer (``VideoCache``), so decoding never touches the video stream: that part,
``encode_video`` and transformers' generation hooks, is ``VambaGenerationMixin`` (vamba.models.generation); the
output type is vamba.models.outputs.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache, PreTrainedModel
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRMSNorm, Qwen2VLRotaryEmbedding

from vamba.models.cache import VideoCache
from vamba.models.configuration import VambaConfig
from vamba.models.decoder import LayerInputs, VambaDecoderLayer
from vamba.models.fp8 import set_fp8, vision_fp8
from vamba.models.generation import VambaGenerationMixin
from vamba.models.loss import chunked_lm_loss
from vamba.models.mamba2 import Mamba2Mixer
from vamba.models.mamba2 import RMSNorm as Mamba2RMSNorm
from vamba.models.offload import HostOffload
from vamba.models.outputs import CACHE_NAME, VambaOutput
from vamba.models.positions import VideoLayout, text_positions, text_segments, video_layout
from vamba.models.selective_scan import SelectiveScanBlock
from vamba.models.sharding import ContextParallelHooks
from vamba.models.vision import VambaVisionTower, frame_pieces
from vamba.models.visual_inputs import packed_visual_inputs
from vamba.models.zero import gathered


class VambaPreTrainedModel(PreTrainedModel):
    config_class = VambaConfig
    config: VambaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["VambaDecoderLayer", "Qwen2VLVisionBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _skip_keys_device_placement = ["cache", "past_key_values"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # Children are initialised before their parent, so these overrides win over the generic Linear init.
        # NOTE: transformers visits only modules that own missing parameters directly, so the Mamba-2 init
        # hangs on the mixer (it owns A_log, D, dt_bias and re-initialises its children the released way).
        if isinstance(module, VambaDecoderLayer) and module.alpha is not None:
            module.alpha.fill_(0.5)
        elif isinstance(module, Mamba2Mixer):
            # NOTE: a mixer and its direct children only: under ZeRO-3 transformers gathers exactly those
            # parameters and runs this on rank 0 alone, so nothing here may need another collective.
            module.reset_parameters()
        elif isinstance(module, (Mamba2RMSNorm, SelectiveScanBlock)):
            module.reset_parameters()


class VambaTextModel(nn.Module):
    """The decoder stack (``model.*`` keys). Runs text and video streams layer by layer."""

    def __init__(self, config: VambaConfig) -> None:
        super().__init__()
        text = config.text_config
        self.embed_tokens = nn.Embedding(text.vocab_size, text.hidden_size, text.pad_token_id)
        self.layers = nn.ModuleList(VambaDecoderLayer(config, i) for i in range(text.num_hidden_layers))
        self.norm = Qwen2VLRMSNorm(text.hidden_size, eps=text.rms_norm_eps)
        self.rotary_emb = Qwen2VLRotaryEmbedding(config=text)
        self.gradient_checkpointing = False
        self.offload_checkpoints = False  # checkpointed layers' inputs wait in host memory (HostOffload)
        self.offloaded_bytes = 0  # of the last forward

    def forward(self, text: torch.Tensor, video: torch.Tensor | None, inputs: LayerInputs,
                video_cache: VideoCache | None, collect_cache: bool
                ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """text [B, N, D] embeddings, video [B, M, D] merged vision tokens (None with a video_cache).
        Returns final-norm text states [B, N, D] and, if ``collect_cache``, each layer's (k, v)."""
        kvs = []
        offload = HostOffload()
        for i, layer in enumerate(self.layers):
            kv = (video_cache.keys[i], video_cache.values[i]) if video_cache is not None else None
            if self.gradient_checkpointing and self.training and kv is None:
                # Both streams are recomputed in backward: the layer is the checkpoint unit.
                with offload if self.offload_checkpoints else contextlib.nullcontext():
                    text, video, k, v = checkpoint(layer, text, video, inputs, use_reentrant=False)
            else:
                text, video, k, v = layer(text, video, inputs, kv)
            if collect_cache:
                kvs.append((k, v))
        self.offloaded_bytes = offload.bytes
        return self.norm(text), kvs


class VambaForConditionalGeneration(VambaPreTrainedModel, VambaGenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: VambaConfig) -> None:
        super().__init__(config)
        self.visual = VambaVisionTower._from_config(config.vision_config)
        self.model = VambaTextModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.context_parallel: ContextParallelHooks | None = None
        self.post_init()
        set_fp8(self, config.fp8)

    def set_context_parallel(self, hooks: ContextParallelHooks | None) -> None:
        """Shard the video stream over the ranks of a context-parallel group (None: back to one process).

        ``hooks`` comes from ``vamba.parallel`` (docs/context_parallel.md). Afterwards ``forward`` takes this rank's
        visual pieces (``visual_t_offset`` places each piece in its video) and the full, replicated text; its
        loss, logits and hidden states are those of the whole batch, identical on every rank. Gradients follow
        the group's convention: their mean over the group is the single-process gradient.
        """
        if hooks is not None and self.config.mamba_enabled and self.config.vision_mixer_kind != "mamba2":
            raise ValueError(f"context parallelism supports the mamba2 video mixer (or none), not "
                             f"{self.config.vision_mixer_kind!r}")
        self.context_parallel = hooks

    # -- transformers plumbing ------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    # -- training memory --------------------------------------------------------------------------------
    def set_checkpoint_offload(self, enabled: bool) -> None:
        """With gradient checkpointing (``gradient_checkpointing_enable``) in training mode: keep each checkpointed
        layer's inputs, the text and video streams entering it, in pinned host memory from forward to backward
        instead of on the device (``HostOffload``; docs/model.md). Without checkpointing it has no effect."""
        self.model.offload_checkpoints = bool(enabled)

    @property
    def offloaded_bytes(self) -> int:
        """Bytes the last forward moved to host memory (``set_checkpoint_offload``); 0 when nothing was moved."""
        return self.model.offloaded_bytes

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args: Any, **kwargs: Any):
        """Load a VAMBA checkpoint (ours or the released ``TIGER-Lab/Vamba-Qwen2-VL-7B`` layout) or build one from
        a Qwen2-VL checkpoint (transformers 4.x or 5.x keys). See ``vamba.models.loading``."""
        from vamba.models.loading import load_pretrained

        return load_pretrained(cls, super().from_pretrained, pretrained_model_name_or_path, *args, **kwargs)

    # -- video stream ---------------------------------------------------------------------------------
    def _packed_visual_inputs(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
                              text_seq_idx: torch.Tensor | None, **vision: torch.Tensor | None
                              ) -> dict[str, torch.Tensor | None]:
        """Either naming of the visual inputs -> the packed keys (vamba.models.visual_inputs)."""
        config = self.config
        pads = {"<|image_pad|>": getattr(config, "image_token_id", None),
                "<|video_pad|>": getattr(config, "video_token_id", None)}
        return packed_visual_inputs(input_ids, config.vision_start_token_id, attention_mask=attention_mask,
                                    text_seq_idx=text_seq_idx, pad_token_ids=pads, **vision)

    def _video_stream(self, pixel_values: torch.Tensor | None, grid_thw: torch.Tensor | None,
                      visual_row: torch.Tensor | None, visual_seq_idx: torch.Tensor | None, batch_size: int,
                      packed: bool, dtype: torch.dtype, visual_t_offset: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, VideoLayout]:
        """Vision tower + merger -> the padded video stream [B, M, D] and its layout.

        A batch without any visual item still runs the vision tower, on one dummy item that no text token
        reads (every rank must call every module each step under ZeRO-3; docs/design.md).
        """
        vc = self.config.vision_config
        device = self.lm_head.weight.device
        if grid_thw is None or grid_thw.shape[0] == 0:
            m = vc.spatial_merge_size
            patch_dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size ** 2
            pixel_values = torch.zeros(m * m, patch_dim, device=device)
            grid_thw = torch.tensor([[1, m, m]], device=device)
            visual_row = torch.zeros(1, dtype=torch.long, device=device)
            visual_seq_idx = visual_t_offset = None
            dummy = True
        else:
            if visual_row is None:
                if batch_size != 1:
                    raise ValueError("visual_row is required when the batch has more than one row (docs/batch.md)")
                visual_row = torch.zeros(grid_thw.shape[0], dtype=torch.long, device=grid_thw.device)
            dummy = False
        layout = video_layout(grid_thw, visual_row, visual_seq_idx, batch_size, vc.spatial_merge_size, packed,
                              visual_t_offset)
        n_patches = int(grid_thw.prod(-1).sum())
        if pixel_values is None or pixel_values.shape[0] != n_patches:
            got = None if pixel_values is None else pixel_values.shape[0]
            raise ValueError(f"grid_thw implies {n_patches} patches, pixel_values has {got}: "
                             f"pixel_values and grid_thw disagree")
        merged = self._vision_tower(pixel_values.to(self.visual.dtype), grid_thw)
        video = layout.scatter(merged.to(dtype))
        if dummy:
            layout.segments.fill_(-1)
        return video, layout

    def _layer_inputs(self, text: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None,
                      text_seq_idx: torch.Tensor | None, past_len: int, text_cache, video_segments: torch.Tensor,
                      video_positions: torch.Tensor | None, video_seq_idx: torch.Tensor | None) -> LayerInputs:
        b, n = text.shape[:2]
        if attention_mask.shape[1] == n + past_len:
            full_mask = attention_mask
        elif attention_mask.shape[1] == n:
            full_mask = torch.cat([attention_mask.new_ones(b, past_len), attention_mask], dim=1)
        else:
            raise ValueError(f"attention_mask has {attention_mask.shape[1]} columns; expected {n} or {n + past_len} "
                             f"(new tokens, or cached + new)")
        mask_now = full_mask[:, past_len:]
        if position_ids is None:
            position_ids = text_positions(full_mask)[:, past_len:]
        rope = self.model.rotary_emb(text, position_ids[None].expand(3, -1, -1))
        q_seg = text_segments(mask_now, text_seq_idx)
        self_q, self_k = q_seg, (text_segments(full_mask, None) if past_len else q_seg)
        if text_seq_idx is None and bool(full_mask.all()):
            self_q = self_k = None  # one sample per row, no padding: plain causal attention
        cross_q, cross_k = q_seg, video_segments
        if text_seq_idx is None and bool(mask_now.all()) and bool((video_segments == 0).all()):
            cross_q = cross_k = None
        video_rope = None
        if self.config.cross_attn_use_position_embeddings and video_positions is not None:
            video_rope = self.model.rotary_emb(text, video_positions)
        return LayerInputs(rope, video_rope, self_q, self_k, cross_q, cross_k, video_seq_idx, text_cache,
                           self.config.attention_backend, decode=self.config.decode_attention)

    def _vision_tower(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """pixel_values [P, 1176] -> merged vision tokens [P / 4, D], with autograd only where something trains.

        Frozen ViT blocks run without autograd, and a trainable merger (stage 2) then re-runs on their output
        with it. NOTE: with transformers' checkpointing switched on (its vision blocks are
        GradientCheckpointingLayers), frozen blocks run with grad enabled kept every block's output to the end
        of the step: 15 GiB at 256 frames at 7B (scripts/profile_train_memory.py, H200, 2026-12-01)."""
        blocks_train = pixel_values.requires_grad or any(
            p.requires_grad for name, p in self.visual.named_parameters() if not name.startswith("merger."))
        merger_trains = any(p.requires_grad for p in self.visual.merger.parameters())
        how = {"attention": self.config.vision_attention, "compile": self.config.vision_compile,
               "fp8": vision_fp8(self.config.fp8)}
        if blocks_train:
            return self.visual(pixel_values, grid_thw=grid_thw, **how).pooler_output
        with torch.no_grad():
            parts = [self.visual(p, grid_thw=g, **how) for p, g in frame_pieces(pixel_values, grid_thw,
                                                                                  self.config.vision_piece_frames)]
        blocks = torch.cat([out.last_hidden_state for out in parts]) if len(parts) > 1 else parts[0].last_hidden_state
        if merger_trains and torch.is_grad_enabled():
            return self.visual.merger(blocks)  # 5.x: the blocks' output, before the merger
        return torch.cat([out.pooler_output for out in parts]) if len(parts) > 1 else parts[0].pooler_output

    # -- forward --------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                text_seq_idx: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                grid_thw: torch.Tensor | None = None, visual_row: torch.Tensor | None = None,
                visual_seq_idx: torch.Tensor | None = None, visual_t_offset: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None,
                cache=None, video_cache: VideoCache | None = None, use_cache: bool | None = None,
                logits_to_keep: int = 0, return_logits: bool | None = None,
                num_items_in_batch: int | torch.Tensor | None = None, past_key_values=None,
                pixel_values_videos: torch.Tensor | None = None, image_grid_thw: torch.Tensor | None = None,
                video_grid_thw: torch.Tensor | None = None, mm_token_type_ids: torch.Tensor | None = None,
                **kwargs: Any) -> VambaOutput:
        """Batch keys as docs/batch.md, plus generation state.

        input_ids / attention_mask / labels / position_ids / text_seq_idx: [B, N]; pixel_values [P, 1176],
        grid_thw [V, 3], visual_row / visual_seq_idx / visual_t_offset [V] (the last: first temporal patch of
        each item within its video, for pieces; context parallelism, ``set_context_parallel``). Or, instead of
        grid_thw / visual_row / visual_seq_idx, transformers' names: pixel_values + image_grid_thw [I, 3] (images),
        pixel_values_videos [P', 1176] + video_grid_thw [V', 3] (videos), mm_token_type_ids [B, N]
        (vamba.models.visual_inputs: each item is placed by its ``<|vision_start|>`` token). ``cache`` (or its old
        name ``past_key_values``):
        text KV cache (with ``attention_mask`` over cached + new tokens). ``video_cache``: cross-attention K/V from an earlier call
        (the vision inputs are then ignored). ``use_cache``: return both caches. Logits are computed only when
        no labels are given or ``return_logits`` is set (``logits_to_keep`` > 0 keeps the last positions);
        the loss never materialises full float32 logits (``config.loss_chunk_size``).
        """
        for key in kwargs:
            if key not in ("cache_position", "return_dict", "output_attentions", "output_hidden_states"):
                raise TypeError(f"VambaForConditionalGeneration.forward got an unexpected argument {key!r}")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if cache is not None and past_key_values is not None:
            raise ValueError("pass the text KV cache once, as cache or as past_key_values")
        cache = cache if cache is not None else past_key_values
        text = self.model.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        b, n = text.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones(b, n, dtype=torch.long, device=text.device)
        use_cache = bool(use_cache) and not (self.model.gradient_checkpointing and self.training)
        if use_cache and cache is None:
            cache = DynamicCache()
        past_len = cache.get_seq_length() if cache is not None else 0
        packed = text_seq_idx is not None

        cp = self.context_parallel
        if cp is not None and (use_cache or cache is not None or video_cache is not None):
            raise ValueError("with context parallelism forward takes no caches (use_cache, cache, video_cache): "
                             "generation runs in one process")
        video, layout = None, None
        if video_cache is None:
            visual = self._packed_visual_inputs(
                input_ids, attention_mask, text_seq_idx, pixel_values=pixel_values, grid_thw=grid_thw,
                visual_row=visual_row, visual_seq_idx=visual_seq_idx, pixel_values_videos=pixel_values_videos,
                image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw, mm_token_type_ids=mm_token_type_ids)
            video, layout = self._video_stream(**visual, batch_size=b, packed=packed, dtype=text.dtype,
                                               visual_t_offset=visual_t_offset)
            video_segments, video_positions, video_seq_idx = layout.segments, layout.positions, layout.seq_idx
        else:
            if video_cache.batch_size not in (b, 1):
                raise ValueError(f"video_cache has {video_cache.batch_size} rows, the text batch {b} (needs {b} or 1)")
            video_segments, video_positions, video_seq_idx = video_cache.segments, None, None
        inputs = self._layer_inputs(text, attention_mask, position_ids, text_seq_idx, past_len,
                                    cache, video_segments, video_positions,
                                    video_seq_idx)
        if cp is not None:
            inputs.video_shard = cp.shard(layout.segments)
        collect = use_cache and video_cache is None
        hidden, kvs = self.model(text, video, inputs, video_cache, collect_cache=collect)
        if collect:
            video_cache = VideoCache([k for k, _ in kvs], [v for _, v in kvs], layout.segments)

        loss = None
        if labels is not None:
            seg = text_segments(attention_mask[:, -n:], text_seq_idx) if packed else None
            loss = chunked_lm_loss(hidden, labels, self.lm_head, self.config.loss_chunk_size, seg, num_items_in_batch)
        logits = None
        if return_logits or (return_logits is None and labels is None):
            logits = self.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        keep = use_cache or cache is not None
        return VambaOutput(loss=loss, logits=logits, video_cache=video_cache if keep else None,
                           last_hidden_state=hidden, **{CACHE_NAME: cache})

    def parameters_without_effect(self) -> list[str]:
        """Names of parameters that never influence an output: the last layer's Mamba-2 block (its video
        states would only feed a next layer). They are kept so released checkpoints load key for key, and
        skipped in forward; trainers should freeze them (or DDP needs find_unused_parameters)."""
        last = self.model.layers[-1].vision_mixer
        prefix = f"model.layers.{len(self.model.layers) - 1}.vision_mixer."
        return [prefix + name for name, _ in last.named_parameters()] if last is not None else []

    # -- cross-attention initialisation ---------------------------------------------------------------
    @torch.no_grad()
    def init_cross_attn_from_self_attn(self) -> None:
        """Copy every layer's self-attention weights into its cross-attention (the paper's initialisation).

        Under DeepSpeed ZeRO-3 the parameters are partitioned: they are gathered (``vamba.models.zero.gathered``),
        rank 0 writes and the partitions are updated on exit.
        """
        for layer in self.model.layers:
            src = dict(layer.self_attn.named_parameters())
            dst = dict(layer.cross_attn.named_parameters())
            if src.keys() != dst.keys():
                raise RuntimeError(f"cross_attn / self_attn parameter names differ: {sorted(src)} vs {sorted(dst)}")
            with gathered([*src.values(), *dst.values()]) as kept:
                if kept:
                    for name, p in dst.items():
                        p.copy_(src[name])
