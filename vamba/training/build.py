"""Build what a training run needs from its config: tokenizer, student, teacher, datasets.

Each builder reads one part of ``TrainConfig`` and fails with a clear message on a bad input (missing
checkpoint, tokenizer without the Qwen2 special tokens, a stage pattern that matches nothing).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vamba.training.config import ConfigError, DataConfig, ModelConfig, StageConfig, TinyDims, TrainConfig
from vamba.models.zero import check_zero3_partitioned
from vamba.training.params import TrainableSummary, select_trainable

SPECIAL = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def load_tokenizer(cfg: TrainConfig):
    from transformers import AutoTokenizer

    path = cfg.data.tokenizer or cfg.model.path
    tok = AutoTokenizer.from_pretrained(path)
    missing = [t for t in SPECIAL if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id)]
    if missing:
        raise ConfigError(f"tokenizer {path} lacks the Qwen2-VL special tokens {missing}")
    if tok.pad_token_id is None:
        raise ConfigError(f"tokenizer {path} has no pad token")
    return tok


def special_ids(tok) -> dict[str, int]:
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    return {"vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"],
            "image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"]}


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (t, h, w) as Qwen2-VL does (16/24/24 of 64)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def tiny_text_vision(tok, dims: TinyDims) -> tuple[dict[str, Any], dict[str, Any]]:
    """Text and vision sub-configs of a tiny Qwen2-VL-shaped model over ``tok``'s vocabulary."""
    head_dim = dims.hidden_size // dims.num_heads
    text = dict(vocab_size=len(tok), hidden_size=dims.hidden_size, intermediate_size=dims.intermediate_size,
                num_hidden_layers=dims.num_layers, num_attention_heads=dims.num_heads,
                num_key_value_heads=dims.num_kv_heads, max_position_embeddings=8192, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": _mrope_section(head_dim)},
                bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = dict(depth=dims.vision_depth, embed_dim=dims.vision_embed_dim, hidden_size=dims.hidden_size,
                  num_heads=dims.vision_heads, mlp_ratio=2, spatial_merge_size=2, patch_size=14,
                  temporal_patch_size=2)
    return text, vision


def tiny_qwen2vl(tok, dims: TinyDims, seed: int = 0):
    """A randomly initialised tiny ``Qwen2VLForConditionalGeneration`` (the demo's teacher)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text, vision = tiny_text_vision(tok, dims)
    torch.manual_seed(seed)
    return Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text, vision_config=vision, **special_ids(tok)))


def _mamba(m: ModelConfig) -> dict[str, Any]:
    """The per-layer video block settings: released Mamba-2 ones, tiny ones, or none at all (``enable``)."""
    mixer = {} if m.size != "tiny" else dict(d_state=m.tiny.mamba_d_state, headdim=m.tiny.mamba_headdim,
                                             chunk_size=m.tiny.mamba_chunk_size)
    return {**mixer, "enable": m.vision_mixer != "none"}


def build_model(cfg: TrainConfig, tok) -> nn.Module:
    """The student: loaded/converted from ``model.path`` or randomly initialised at ``model.size``."""
    from vamba.models import VambaConfig, VambaForConditionalGeneration
    from vamba.models.presets import vamba_config_for

    m = cfg.model
    dtype = getattr(torch, m.dtype)
    options = dict(attention_backend=m.attention_backend, vision_attention=m.vision_attention,
                   vision_compile=m.vision_compile, use_alpha_balancing=m.use_alpha_balancing,
                   cross_attn_init=m.cross_attn_init,
                   vision_mixer_kind="selective_scan" if m.vision_mixer == "selective_scan" else "mamba2")
    torch.manual_seed(cfg.seed)  # new modules of a converted checkpoint are drawn from this seed
    if m.path:
        # a converted tiny Qwen2-VL gets the tiny Mamba-2 blocks, not the 7B ones
        if m.size == "tiny" or m.vision_mixer != "mamba2":
            options["vision_mamba_mixer_config"] = _mamba(m)
        model = VambaForConditionalGeneration.from_pretrained(m.path, dtype=dtype, **options)
    else:
        if m.size == "tiny":
            text, vision = tiny_text_vision(tok, m.tiny)
            config = VambaConfig(text_config=text, vision_config=vision, vision_mamba_mixer_config=_mamba(m),
                                 **special_ids(tok), **options)
        else:
            config = vamba_config_for(m.size, vision_mamba_mixer_config=_mamba(m), **options)
        # _from_config, not the constructor: under ZeRO-3 it builds inside deepspeed.zero.Init, so parameters
        # are partitioned as they are made and buffers (rotary inv_freq) are created on the GPU
        model = VambaForConditionalGeneration._from_config(config, dtype=dtype)
    check_zero3_partitioned(model)
    if model.config.text_config.vocab_size < len(tok):
        raise ConfigError(f"the model's vocabulary ({model.config.text_config.vocab_size}) is smaller than the "
                          f"tokenizer's ({len(tok)}): wrong tokenizer for this checkpoint?")
    if m.offload_checkpoints and not m.gradient_checkpointing:
        raise ConfigError("model.offload_checkpoints=true needs model.gradient_checkpointing=true (it offloads "
                          "the checkpointed layers' inputs)")
    if m.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.set_checkpoint_offload(m.offload_checkpoints)
    return model


def apply_stage(model: nn.Module, stage: StageConfig) -> TrainableSummary:
    """Freeze everything except the stage's patterns; never train parameters without effect (DDP safety)."""
    summary = select_trainable(model, list(stage.trainable))
    idle = set(model.parameters_without_effect())
    for name, p in model.named_parameters():
        if name in idle:
            p.requires_grad_(False)
    return summary


def apply_lora(model: nn.Module, stage: StageConfig) -> nn.Module:
    """Wrap ``model`` with LoRA adapters on the modules matching ``stage.lora.target_modules``; parameters the
    stage selected outside those modules (e.g. the merger) stay trainable in full."""
    from peft import LoraConfig, get_peft_model

    keep = {id(p) for p in model.parameters() if p.requires_grad}
    lora = stage.lora
    peft_model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                  target_modules=lora.target_modules, bias="none"))
    for name, p in peft_model.named_parameters():
        if id(p) in keep and ".base_layer." not in name:
            p.requires_grad_(True)
    return peft_model


def load_teacher(path: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The frozen distillation teacher: the source Qwen2-VL (full self-attention over video + text). A VAMBA
    checkpoint here is an error (transformers would build plain Qwen2-VL from it, dropping weights)."""
    from transformers import Qwen2VLForConditionalGeneration

    from vamba.models.loading import ensure_plain_qwen2_vl

    ensure_plain_qwen2_vl(path)
    teacher = Qwen2VLForConditionalGeneration.from_pretrained(path, dtype=dtype).eval()
    teacher.requires_grad_(False)
    return teacher


def data_config(d: DataConfig, skip_log: str | None, shard: tuple[int, int] | None = None):
    from vamba.data.dataset import ProcessingConfig
    from vamba.data.sampling import FrameSampling
    from vamba.data.video import VideoReadConfig
    from vamba.data.vision import VisionConfig

    return ProcessingConfig(sampling=FrameSampling(d.sampling, d.num_frames),
                            vision=VisionConfig(min_pixels=d.min_pixels, max_pixels=d.max_pixels),
                            video=VideoReadConfig(max_frames=d.max_source_frames, max_frame_pixels=d.max_source_pixels),
                            max_text_tokens=d.max_text_tokens, max_video_tokens=d.max_video_tokens, seed=d.seed,
                            skip_log=skip_log, shard=shard)


def training_processor(cfg: TrainConfig, tok):
    """The processor saved beside every checkpoint of a run (``VambaProcessor``): the run's tokenizer and the
    frames and resize its data used (random sampling becomes uniform at inference)."""
    import dataclasses

    from vamba.data.processor import build_processor

    pipeline = data_config(cfg.data, None)
    sampling = pipeline.sampling
    if sampling.mode == "random":
        sampling = dataclasses.replace(sampling, mode="uniform")
    return build_processor(tok, pipeline.vision, sampling)


class MemoryCache(torch.utils.data.Dataset):
    """Processed samples kept after their first read (decoding is the cost of a small CPU run). Only for
    deterministic frame sampling: every epoch would otherwise see other frames."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        self.samples: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if index not in self.samples:
            self.samples[index] = self.dataset[index]
        return self.samples[index]

    def try_get(self, index: int):
        if index not in self.samples:
            sample = self.dataset.try_get(index)
            if sample is None:
                return None
            self.samples[index] = sample
        return self.samples[index]

    def measure(self):
        return self.dataset.measure()

    @property
    def config(self):
        return self.dataset.config

    @property
    def skips(self):
        return self.dataset.skips


def build_dataset(cfg: TrainConfig, tok, skip_log: str | None = None,
                  shard: tuple[int, int] | None = None) -> torch.utils.data.Dataset:
    """The training set: samples (padded batches) or packed rows (``data.packing``). ``shard=(rank, size)``:
    context parallelism, decode only this rank's temporal patches of each row."""
    from vamba.data.dataset import PackedDataset, VambaDataset
    from vamba.data.mixture import Mixture
    from vamba.data.packing import plan_rows

    d = cfg.data
    dataset = VambaDataset(Mixture.from_yaml(d.mixture, d.confine_media), tok, data_config(d, skip_log, shard))
    if d.cache_in_memory:
        dataset = MemoryCache(dataset)
    if cfg.debug.overfit_batches > 0:
        n = cfg.debug.overfit_batches * cfg.optim.per_device_batch_size
        dataset = torch.utils.data.Subset(dataset, list(range(min(n, len(dataset)))))
    if d.packing:
        if cfg.debug.overfit_batches > 0:
            raise ConfigError("debug.overfit_batches and data.packing cannot be combined")
        plan = plan_rows(dataset.measure(), text_budget=d.text_budget, video_budget=d.video_budget, seed=d.seed)
        if not plan.rows:
            raise ConfigError(f"data.packing: no sample of {d.mixture} fits a row (data.text_budget={d.text_budget}, "
                              f"data.video_budget={d.video_budget}; {len(plan.unpackable)} over a budget, "
                              f"{len(plan.missing)} unreadable)")
        return PackedDataset(dataset, plan.rows)
    return dataset
