"""Build what a training run needs from its config: tokenizer, student, teacher, datasets.

Each builder reads one part of ``TrainConfig`` and fails with a clear message on a bad input (missing
checkpoint, tokenizer without the Qwen2 special tokens, a stage pattern that matches nothing).
"""
from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import nn

from vamba.models.names import matches_any
from vamba.models.presets import SPECIAL_TOKENS, special_token_ids, tiny_mamba, tiny_vamba_config, token_ids
from vamba.models.zero import check_zero3_partitioned, full_numel
from vamba.training.config import ConfigError, DataConfig, ModelConfig, StageConfig, TrainConfig
from vamba.training.params import LoraSummary, TrainableSummary, select_trainable


def load_tokenizer(cfg: TrainConfig):
    from transformers import AutoTokenizer

    path = cfg.data.tokenizer or cfg.model.path
    tok = AutoTokenizer.from_pretrained(path)
    missing = [t for t in SPECIAL_TOKENS.values() if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id)]
    if missing:
        raise ConfigError(f"tokenizer {path} lacks the Qwen2-VL special tokens {missing}")
    if tok.pad_token_id is None:
        raise ConfigError(f"tokenizer {path} has no pad token")
    return tok


def _mamba(m: ModelConfig) -> dict[str, Any]:
    """The per-layer video block settings: released Mamba-2 ones, tiny ones, or none at all (``enable``)."""
    mixer = tiny_mamba(m.tiny) if m.size == "tiny" else {}
    return {**mixer, "enable": m.vision_mixer != "none"}


def build_model(cfg: TrainConfig, tok) -> nn.Module:
    """The student: loaded/converted from ``model.path`` or randomly initialised at ``model.size``."""
    from vamba.models import VambaForConditionalGeneration
    from vamba.models.presets import vamba_config_for

    m = cfg.model
    dtype = getattr(torch, m.dtype)
    options = dict(attention_backend=m.attention_backend, vision_attention=m.vision_attention,
                   vision_compile=m.vision_compile, fp8=m.fp8, use_alpha_balancing=m.use_alpha_balancing,
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
            config = tiny_vamba_config(len(tok), m.tiny, token_ids(tok), mamba=_mamba(m), **special_token_ids(tok),
                                       **options)
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
        # non-reentrant, as the released scripts ask (and as our decoder layers always are), whatever the
        # transformers version's default for the vision blocks
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.set_checkpoint_offload(m.offload_checkpoints)
    return model


def apply_stage(model: nn.Module, stage: StageConfig) -> TrainableSummary:
    """Freeze everything except the stage's patterns; never train parameters without effect (DDP safety)."""
    return select_trainable(model, list(stage.trainable), frozenset(model.parameters_without_effect()))


def lora_targets(model: nn.Module, stage: StageConfig) -> list[str]:
    """Names of the ``nn.Linear`` modules that get LoRA adapters: those whose name fully matches
    ``stage.lora.target_modules`` and whose weight ``stage.trainable`` selects (the stage says *what* tunes, LoRA
    says *how*), less modules without effect (the last layer's Mamba-2 block: an adapter there gets no gradient,
    which would break DDP)."""
    idle = set(model.parameters_without_effect())
    pattern = re.compile(stage.lora.target_modules)
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and pattern.fullmatch(name)
             and matches_any(f"{name}.weight", stage.trainable) and f"{name}.weight" not in idle]
    if not names:
        raise ConfigError(f"stage.lora.target_modules={stage.lora.target_modules!r} matches no linear layer that "
                          f"stage.trainable={list(stage.trainable)} selects: LoRA would train nothing")
    return names


def apply_lora(model: nn.Module, stage: StageConfig) -> tuple[nn.Module, LoraSummary]:
    """Wrap ``model`` with LoRA adapters on ``lora_targets(model, stage)``; train the adapters and the parameters
    ``stage.lora.train_in_full`` selects, nothing else.

    PEFT's ``get_peft_model`` freezes every parameter but the adapters; the released train_vamba.py adds nothing
    back (its ``trainable_modules`` only set ``requires_grad`` before that call), so by default nothing trains in
    full here either.

    Raises:
        ConfigError: no target layer; a ``train_in_full`` pattern matching no parameter, or selecting a parameter
            of a layer that gets an adapter.
    """
    from peft import LoraConfig, get_peft_model

    lora = stage.lora
    targets = lora_targets(model, stage)
    adapted = set(targets)
    idle = set(model.parameters_without_effect())
    in_full = {pattern: 0 for pattern in lora.train_in_full}
    full_params: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        hit = [pattern for pattern in lora.train_in_full if fnmatchcase(name, pattern)]
        if not hit or name in idle:
            continue
        if name.rsplit(".", 1)[0] in adapted:
            raise ConfigError(f"stage.lora.train_in_full {hit} selects {name}, a parameter of a layer that gets a "
                              f"LoRA adapter: train it through the adapter or in full, not both")
        for pattern in hit:
            in_full[pattern] += full_numel(param)
        full_params.append(param)
    unused = [pattern for pattern, count in in_full.items() if count == 0]
    if unused:
        raise ConfigError(f"stage.lora.train_in_full pattern(s) {unused} match no parameter that has an effect")
    peft_model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                  target_modules=targets, bias="none",
                                                  use_dora=lora.dora))
    for param in full_params:
        param.requires_grad_(True)
    adapters = sum(full_numel(p) for n, p in peft_model.named_parameters() if ".lora_" in n)
    frozen = sum(full_numel(p) for p in peft_model.parameters() if not p.requires_grad)
    return peft_model, LoraSummary(adapters, len(targets), in_full, frozen)


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
                            skip_log=skip_log, shard=shard, pixel_dtype=d.pixel_dtype)


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


def split_mixture(d: DataConfig):
    """(training mixture, validation mixture or None): ``data.val_fraction`` holds out the last samples of the
    mixture's shuffled order (so both splits mix the sources in proportion); ``data.val_mixture`` is its own YAML."""
    from vamba.data.mixture import Mixture

    mixture = Mixture.from_yaml(d.mixture, d.max_img_seq_len, d.confine_media)
    if d.val_mixture is not None:
        return mixture, Mixture.from_yaml(d.val_mixture, d.max_img_seq_len, d.confine_media)
    held = round(d.val_fraction * len(mixture))
    if d.val_fraction > 0 and not 0 < held < len(mixture):
        raise ConfigError(f"data.val_fraction={d.val_fraction} of {len(mixture)} samples holds out {held}: "
                          f"need at least one for validation and one for training")
    if held == 0:
        return mixture, None
    return mixture.take(0, len(mixture) - held), mixture.take(len(mixture) - held, len(mixture))


def build_eval_dataset(cfg: TrainConfig, tok, skip_log: str | None = None):
    """The validation set (unpacked samples, processed as the training ones), or None without one."""
    from vamba.data.dataset import VambaDataset

    held = split_mixture(cfg.data)[1]
    return None if held is None else VambaDataset(held, tok, data_config(cfg.data, skip_log))


def build_dataset(cfg: TrainConfig, tok, skip_log: str | None = None,
                  shard: tuple[int, int] | None = None) -> torch.utils.data.Dataset:
    """The training set: samples (padded batches) or packed rows (``data.packing``). ``shard=(rank, size)``:
    context parallelism, decode only this rank's temporal patches of each row."""
    from vamba.data.dataset import MemoryCache, PackedDataset, VambaDataset
    from vamba.data.packing import plan_rows

    d = cfg.data
    dataset = VambaDataset(split_mixture(d)[0], tok, data_config(d, skip_log, shard))
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
