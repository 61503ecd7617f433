"""``VambaConfig``: Qwen2-VL's configuration plus the VAMBA options (cross-attention, alpha, Mamba-2).

The text and vision sub-configs are transformers' own (``Qwen2VLTextConfig`` / ``Qwen2VLVisionConfig``,
inherited from ``Qwen2VLConfig``). VAMBA adds the fields below; ``use_alpha_balancing``, the two
``cross_attn_use_*`` flags and ``vision_mamba_mixer_config`` keep the names and meaning of the released
checkpoint ``TIGER-Lab/Vamba-Qwen2-VL-7B``, the others are ours:

- ``use_alpha_balancing``: text update ``x + a*SA + (1-a)*CA`` with a learnable ``a`` in [0, 1]
  (False: ``x + SA + CA``).
- ``cross_attn_use_layer_norm``: cross-attention keys/values read the video states after the layer's
  input RMSNorm (False, as released: the raw video states).
- ``cross_attn_use_position_embeddings``: M-RoPE on cross-attention queries (text positions) and keys
  (3-D ``(t, h, w)`` video positions). False as released.
- ``cross_attn_init``: ``"self_attn"`` (copy the layer's self-attention weights, the paper's choice) or
  ``"random"`` (the ablation). Only used when a model is built from a plain Qwen2-VL checkpoint.
- ``attention_backend`` and ``loss_chunk_size`` (ours): how attention runs (vamba.models.attention) and
  how many tokens each chunk of the cross-entropy holds.
- ``decode_attention`` (ours): how decoding queries read a long cached video (vamba.models.decode_attention):
  ``auto`` (the reference: the split-K path measured slower on an H100), ``split`` (always) or ``reference``.
- ``vision_attention`` and ``vision_compile`` (ours): how the vision tower runs (vamba.models.vision):
  ``auto`` (the fast forward), ``batched``, ``varlen`` or ``reference`` (transformers' forward); and whether
  the fast forward's blocks are ``torch.compile``d (off by default).
- ``vision_piece_frames`` (ours): a frozen vision tower (no autograd) encodes at most this many frames per call
  (0: all of a batch's frames in one call). Exact (its attention never crosses a temporal patch); it bounds the
  tower's transient memory in a training step the way the streaming prefill's pieces do.
- ``fp8`` (ours): which linear layers run in FP8 on Hopper (vamba.models.fp8): ``none`` (default), ``vision``
  (the vision tower) or ``all`` (and the decoder's, in the prefill and in training).
- ``vision_mamba_mixer_config``: the Mamba-2 block settings, stored under the released key names
  (``enable``, ``d_state``, ``d_conv``, ``expand``, ``headdim``, ``ngroups``, ``chunk_size``, ...).
- ``vision_mixer_kind`` (ours): the per-layer video block when enabled: ``"mamba2"`` (as released) or
  ``"selective_scan"``, the Mamba-1-style ablation arm (``vamba.models.selective_scan``, pure PyTorch; its
  d_state, d_conv, expand and dt range come from ``vision_mamba_mixer_config``).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

from transformers import PretrainedConfig, Qwen2VLConfig

from vamba.models.attention import ATTENTION_BACKENDS
from vamba.models.decode_attention import DECODE_ATTENTION
from vamba.models.fp8 import FP8_MODES
from vamba.models.vision import VISION_ATTENTION

CROSS_ATTN_INITS = ("self_attn", "random")
VISION_MIXER_KINDS = ("mamba2", "selective_scan")

# Released defaults (official configuration + mamba_ssm's Mamba2 defaults); "backend" is ours
# (vamba.ops: auto | fast | reference).
MAMBA_DEFAULTS: dict[str, Any] = {
    "enable": True,
    "d_state": 128,
    "d_conv": 4,
    "expand": 2,
    "headdim": 64,
    "ngroups": 1,
    "chunk_size": 256,
    "bias": False,
    "conv_bias": True,
    "norm_eps": 1e-5,
    "A_init_range": [1.0, 16.0],
    "dt_min": 0.001,
    "dt_max": 0.1,
    "dt_init_floor": 1e-4,
    "rescale_prenorm_residual": True,
    "backend": "auto",
}
# Keys every configuration carries whatever its model: those of the installed transformers (the keys of a bare
# PretrainedConfig().to_dict()) plus those transformers 4.x also wrote into every full-form config (to_dict(),
# to_json_string(use_diff=False)) and 5.x dropped: generation and tokenizer settings, pruning, TorchScript, ...
# (the list is that of the official checkpoint's full form, transformers 4.44, and two bookkeeping keys of
# other 4.x versions).
LEGACY_GENERIC_CONFIG_KEYS = frozenset({
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "torch_dtype", "use_bfloat16",
    "tf_legacy_loss", "pruned_heads", "tie_word_embeddings", "chunk_size_feed_forward", "is_encoder_decoder",
    "is_decoder", "cross_attention_hidden_size", "add_cross_attention", "tie_encoder_decoder", "max_length",
    "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature",
    "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "output_scores",
    "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "architectures",
    "finetuning_task", "id2label", "label2id", "tokenizer_class", "prefix", "bos_token_id", "pad_token_id",
    "eos_token_id", "sep_token_id", "decoder_start_token_id", "task_specific_params", "problem_type",
    "_name_or_path", "transformers_version", "model_type", "_commit_hash", "_attn_implementation_autoset",
})
GENERIC_CONFIG_KEYS = frozenset(PretrainedConfig().to_dict()) | LEGACY_GENERIC_CONFIG_KEYS
# Generic keys that do describe the whole model (token ids, tied embeddings, weight dtype): kept at the top level
# (and in a nested text_config); everywhere else every generic key is dropped.
MODEL_LEVEL_GENERIC_KEYS = frozenset({"tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
                                      "dtype", "torch_dtype"})
# Keys the released config.json carries that do not change what we compute (mamba_ssm implementation
# switches, distributed options); dt_limit is checked to be the released (0, inf) and not stored
# (JSON has no infinity).
MAMBA_IGNORED_KEYS = frozenset({
    "hidden_dim", "norm_type", "residual_in_fp32", "conv_init", "d_ssm", "D_has_hdim", "rmsnorm",
    "norm_before_gate", "dt_limit", "use_mem_eff_path", "process_group", "sequence_parallel", "layer_norm_epsilon",
})
# Keys that would change the math: refuse values other than the released ones instead of ignoring them.
MAMBA_FIXED_VALUES: dict[str, Any] = {
    "norm_type": "rmsnorm", "d_ssm": None, "D_has_hdim": False, "rmsnorm": True, "norm_before_gate": False,
    "conv_init": None, "residual_in_fp32": False,
}


class VambaConfig(Qwen2VLConfig):
    """Qwen2-VL configuration with the VAMBA hybrid-decoder options (see module docstring)."""

    model_type = "vamba"

    use_alpha_balancing: bool = True
    cross_attn_use_layer_norm: bool = False
    cross_attn_use_position_embeddings: bool = False
    cross_attn_init: str = "self_attn"
    vision_mamba_mixer_config: dict | None = None
    vision_mixer_kind: str = "mamba2"
    # Tokens per chunk of the chunked cross-entropy (no [B, N, V] float32 logits when only the loss is needed).
    loss_chunk_size: int = 1024
    # vamba.models.attention backend for both attentions: auto | eager | eager_fused | sdpa | flash_attention_2 | varlen.
    attention_backend: str = "auto"
    # vamba.models.decode_attention: decoding queries over a cached video: auto | reference | split.
    decode_attention: str = "auto"
    # vamba.models.vision: the vision tower's forward (auto | batched | varlen | reference) and torch.compile of it.
    vision_attention: str = "auto"
    vision_compile: bool = False
    vision_piece_frames: int = 512
    # vamba.models.fp8: which linear layers run in FP8 on Hopper: none | vision | all.
    fp8: str = "none"

    def __post_init__(self, **kwargs: Any) -> None:
        for name in ("use_alpha_balancing", "cross_attn_use_layer_norm", "cross_attn_use_position_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"VambaConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if self.cross_attn_init not in CROSS_ATTN_INITS:
            raise ValueError(f"VambaConfig.cross_attn_init must be one of {CROSS_ATTN_INITS}, "
                             f"got {self.cross_attn_init!r}")
        if self.vision_mixer_kind not in VISION_MIXER_KINDS:
            raise ValueError(f"VambaConfig.vision_mixer_kind must be one of {VISION_MIXER_KINDS}, "
                             f"got {self.vision_mixer_kind!r}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"VambaConfig.attention_backend must be one of {ATTENTION_BACKENDS}, "
                             f"got {self.attention_backend!r}")
        if self.decode_attention not in DECODE_ATTENTION:
            raise ValueError(f"VambaConfig.decode_attention must be one of {DECODE_ATTENTION}, "
                             f"got {self.decode_attention!r}")
        if self.vision_attention not in VISION_ATTENTION:
            raise ValueError(f"VambaConfig.vision_attention must be one of {VISION_ATTENTION}, "
                             f"got {self.vision_attention!r}")
        if self.fp8 not in FP8_MODES:
            raise ValueError(f"VambaConfig.fp8 must be one of {FP8_MODES}, got {self.fp8!r}")
        if not isinstance(self.vision_compile, bool):
            raise TypeError(f"VambaConfig.vision_compile must be a bool, got {self.vision_compile!r}")
        if not isinstance(self.vision_piece_frames, int) or self.vision_piece_frames < 0 or self.vision_piece_frames % 2:
            raise ValueError(f"VambaConfig.vision_piece_frames must be 0 or a positive even int (frames come in temporal "
                             f"patches of 2), got {self.vision_piece_frames!r}")
        if not isinstance(self.loss_chunk_size, int) or self.loss_chunk_size < 1:
            raise ValueError(f"VambaConfig.loss_chunk_size must be a positive int, got {self.loss_chunk_size!r}")
        self.vision_mamba_mixer_config = _normalise_mamba(self.vision_mamba_mixer_config)
        super().__post_init__(**kwargs)
        hidden_dim = self.vision_mamba_mixer_config.pop("hidden_dim", None)
        if hidden_dim is not None and hidden_dim != self.text_config.hidden_size:
            raise ValueError(f"vision_mamba_mixer_config.hidden_dim={hidden_dim} differs from the text hidden size "
                             f"{self.text_config.hidden_size}: the Mamba-2 blocks work at the decoder width")

    def to_dict(self) -> dict[str, Any]:
        # A checkpoint does not carry fp8: a model trained with FP8 layers loads in its weights' precision unless the
        # loader asks for FP8 again (vamba.models.fp8); the run's own config records what it trained with.
        out = super().to_dict()
        out.pop("fp8", None)
        return out

    @property
    def mamba_enabled(self) -> bool:
        return bool(self.vision_mamba_mixer_config["enable"])

    def selective_scan_config(self):
        """The ``vamba.models.selective_scan.SelectiveScanConfig`` of the ablation's Mamba-1-style video blocks."""
        from vamba.models.selective_scan import SelectiveScanConfig

        m = self.vision_mamba_mixer_config
        return SelectiveScanConfig(d_model=self.text_config.hidden_size, d_state=m["d_state"], d_conv=m["d_conv"],
                                   expand=m["expand"], dt_min=m["dt_min"], dt_max=m["dt_max"],
                                   dt_init_floor=m["dt_init_floor"], norm_eps=m["norm_eps"])

    def mamba_config(self):
        """The ``vamba.models.mamba2.Mamba2Config`` of the per-layer video blocks (d_model = text hidden size)."""
        from vamba.models.mamba2 import Mamba2Config

        m = self.vision_mamba_mixer_config
        return Mamba2Config(d_model=self.text_config.hidden_size, d_state=m["d_state"], d_conv=m["d_conv"],
                            expand=m["expand"], headdim=m["headdim"], ngroups=m["ngroups"],
                            chunk_size=m["chunk_size"], bias=m["bias"], conv_bias=m["conv_bias"],
                            norm_eps=m["norm_eps"], A_init_range=tuple(m["A_init_range"]), dt_min=m["dt_min"],
                            dt_max=m["dt_max"], dt_init_floor=m["dt_init_floor"],
                            rescale_prenorm_residual=m["rescale_prenorm_residual"],
                            num_layers=self.text_config.num_hidden_layers, backend=m["backend"])

    @classmethod
    def from_qwen2_vl_dict(cls, config_dict: dict[str, Any], **overrides: Any) -> VambaConfig:
        """Build from a Qwen2-VL ``config.json`` dict: a stock Qwen2-VL one (transformers 4.x flat text keys
        or 5.x ``text_config``) or the released VAMBA one (``model_type: qwen2_vl`` plus
        ``vision_mamba_mixer_config`` and the cross-attention flags). ``overrides`` set VambaConfig fields."""
        d = drop_generic_keys(copy.deepcopy(config_dict), keep=MODEL_LEVEL_GENERIC_KEYS)
        if str(config_dict.get("transformers_version", "")).startswith("4.") and "text_config" not in d:
            # A 4.x diff-form config leaves out what equals 4.x's defaults, and there the token ids default to
            # None (5.x's Qwen2VLConfig defaults bos_token_id to Qwen2's 151643).
            for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
                d.setdefault(key, None)
        d.pop("auto_map", None)
        if isinstance(d.get("vision_config"), dict):  # 4.x also saves model_type "qwen2_vl" there
            d["vision_config"] = drop_generic_keys(d["vision_config"])
        if isinstance(d.get("text_config"), dict):
            d["text_config"] = drop_generic_keys(d["text_config"], keep=MODEL_LEVEL_GENERIC_KEYS)
        # The released checkpoint saves its training-only distillation weight; it is not a model option.
        d.pop("distill_coeff", None)
        d.update(overrides)
        return cls(**d)


# Keys a Qwen2-VL config.json of transformers 4.x carries that 5.x folds into ``rope_parameters`` or no longer
# reads (Qwen2-VL-7B-Instruct's own config.json has all of them), and the released checkpoint's training-only
# distillation weight (not a model option).
LEGACY_MODEL_KEYS = frozenset({"rope_scaling", "rope_theta", "vision_token_id", "distill_coeff"})
LEGACY_VISION_KEYS = frozenset({"in_chans", "spatial_patch_size"})


def check_known_keys(config_dict: dict[str, Any]) -> None:
    """Refuse a config.json key that is neither generic (``GENERIC_CONFIG_KEYS``) nor a key of the model: a typo
    such as ``cross_attn_use_layernorm`` would otherwise be kept as an unused attribute and the model built
    without the option. Model keys: VambaConfig's fields, the text config's (4.x writes them flat, at the top
    level), ``LEGACY_MODEL_KEYS``; in ``text_config`` / ``vision_config`` their own fields."""
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig, Qwen2VLVisionConfig

    text_keys = {f.name for f in dataclasses.fields(Qwen2VLTextConfig)} | LEGACY_MODEL_KEYS
    vision_keys = {f.name for f in dataclasses.fields(Qwen2VLVisionConfig)} | LEGACY_VISION_KEYS
    top_keys = {f.name for f in dataclasses.fields(VambaConfig)} | text_keys | {"auto_map"}
    for where, d, known in (("", config_dict, top_keys), ("text_config.", config_dict.get("text_config"), text_keys),
                            ("vision_config.", config_dict.get("vision_config"), vision_keys)):
        if not isinstance(d, dict):
            continue
        unknown = sorted(set(d) - known - GENERIC_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"config.json: unknown key(s) {', '.join(where + k for k in unknown)}: not an option of "
                             f"VambaConfig or Qwen2-VL's {where.rstrip('.') or 'config'} (a typo? see docs/model.md)")


def drop_generic_keys(d: dict[str, Any], keep: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``d`` without the keys of ``GENERIC_CONFIG_KEYS`` (other than ``keep``): what a full-form config of any
    transformers version adds to the model's own keys."""
    return {k: v for k, v in d.items() if k not in GENERIC_CONFIG_KEYS or k in keep}


def _normalise_mamba(raw: dict | None) -> dict[str, Any]:
    """Fill defaults, translate released names, refuse unknown keys and math-changing values."""
    if raw is None:
        return dict(MAMBA_DEFAULTS)
    if hasattr(raw, "to_dict"):
        raw = raw.to_dict()
    if not isinstance(raw, dict):
        raise TypeError(f"vision_mamba_mixer_config must be a dict, got {type(raw).__name__}")
    raw = drop_generic_keys(raw)  # the official code keeps this config as a PretrainedConfig: full form
    if "layer_norm_epsilon" in raw and "norm_eps" not in raw:
        raw["norm_eps"] = raw["layer_norm_epsilon"]
    unknown = set(raw) - set(MAMBA_DEFAULTS) - MAMBA_IGNORED_KEYS
    if unknown:
        raise ValueError(f"vision_mamba_mixer_config: unknown key(s) {sorted(unknown)}; "
                         f"known: {sorted(set(MAMBA_DEFAULTS) | MAMBA_IGNORED_KEYS)}")
    for key, expected in MAMBA_FIXED_VALUES.items():
        if key in raw and raw[key] != expected:
            raise ValueError(f"vision_mamba_mixer_config.{key}={raw[key]!r} is not supported "
                             f"(only the released value {expected!r})")
    limit = raw.get("dt_limit")
    if limit is not None and (float(limit[0]) != 0.0 or not math.isinf(float(limit[1]))):
        raise ValueError(f"vision_mamba_mixer_config.dt_limit={limit!r} is not supported (only (0, inf))")
    out = dict(MAMBA_DEFAULTS)
    out.update({k: v for k, v in raw.items() if k in MAMBA_DEFAULTS})
    if raw.get("hidden_dim") is not None:
        out["hidden_dim"] = raw["hidden_dim"]  # checked against the text hidden size once that is known
    return out
