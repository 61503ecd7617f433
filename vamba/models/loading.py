"""Loading what users have on disk: our checkpoints, the released VAMBA checkpoint, and Qwen2-VL checkpoints.

``VambaForConditionalGeneration.from_pretrained(path)`` reads ``config.json`` and picks one of:

============  =====================================================  ====================================
kind          how it is recognised                                   what happens
============  =====================================================  ====================================
``vamba``     ``model_type: vamba`` (saved by this package)          loaded as is
``released``  ``model_type: qwen2_vl`` + ``vision_mamba_mixer_config``  loaded as is (same key layout)
``qwen2_vl``  ``model_type: qwen2_vl`` without it                    Qwen2-VL weights copied; cross-attn
                                                                     from self-attn (or random, per
                                                                     ``cross_attn_init``), Mamba-2 and
                                                                     alpha freshly initialised
============  =====================================================  ====================================

``path`` is a directory or a hub model id; an id resolves through the local Hugging Face cache as transformers
resolves it (``cache_dir=``, ``HF_HUB_CACHE``; with ``HF_HUB_OFFLINE=1`` the cache alone). Both config forms load:
``save_pretrained``'s diff form and the full form (``to_dict()``), whose generic PretrainedConfig keys are
dropped (vamba.models.configuration). Checkpoint keys in the transformers 5.x layout (``model.language_model.*``, ``model.visual.*``) are
renamed to ours (the 4.x / released layout: ``model.*``, ``visual.*``); sharded safetensors with an
index work through transformers' loader. Any missing key other than the new VAMBA modules of a
``qwen2_vl`` checkpoint, any unexpected key and any shape mismatch is an error naming the keys:
a partial checkpoint never yields a silently random-initialised model.
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Callable

from vamba.models.configuration import VambaConfig, check_known_keys
from vamba.utils.io import read_checkpoint_json, safetensors_header
from vamba.utils.logging import get_logger

logger = get_logger(__name__)

# Checkpoint key -> our key, for checkpoints saved by transformers 5.x Qwen2VLForConditionalGeneration.
KEY_MAPPING_5X = {r"^model\.language_model\.": "model.", r"^model\.visual\.": "visual."}
# Parameters a plain Qwen2-VL checkpoint cannot have: the modules VAMBA adds.
NEW_MODULE_KEYS = re.compile(r"^model\.layers\.\d+\.(cross_attn\.|vision_mixer\.|alpha$)")
# VambaConfig fields a caller may override at load time (the rest of kwargs go to transformers).
CONFIG_OVERRIDES = ("use_alpha_balancing", "cross_attn_use_layer_norm", "cross_attn_use_position_embeddings",
                    "cross_attn_init", "vision_mamba_mixer_config", "vision_mixer_kind", "attention_backend",
                    "decode_attention", "loss_chunk_size", "vision_attention", "vision_compile",
                    "vision_piece_frames", "fp8")


# Weights only a VAMBA checkpoint has (any key layout).
VAMBA_WEIGHT_KEYS = re.compile(r"\.layers\.\d+\.(cross_attn|vision_mixer)\.")


class IncompatibleCheckpointError(ValueError):
    """The checkpoint's weights do not match the model its config describes."""


def checkpoint_kind(config_dict: dict[str, Any]) -> str:
    """``vamba``, ``released`` or ``qwen2_vl`` (module docstring); anything else is an error."""
    model_type = config_dict.get("model_type")
    if model_type == VambaConfig.model_type:
        return "vamba"
    if model_type == "qwen2_vl":
        return "released" if "vision_mamba_mixer_config" in config_dict else "qwen2_vl"
    raise IncompatibleCheckpointError(f"config.json has model_type {model_type!r}; VAMBA loads 'vamba' checkpoints, "
                                      f"the released VAMBA checkpoint and Qwen2-VL checkpoints ('qwen2_vl')")


def checkpoint_keys(path: str, hub_kwargs: dict[str, Any]) -> list[str]:
    """Tensor names of a safetensors checkpoint (single file or sharded with an index). The headers of local
    files are checked on the way: a truncated file is an error naming it (``safetensors_header``)."""
    index = read_checkpoint_json(path, "model.safetensors.index.json", hub_kwargs)
    if index is not None:
        if os.path.isdir(path):
            for shard in sorted(set(index["weight_map"].values())):
                safetensors_header(os.path.join(path, shard))
        return list(index["weight_map"])
    if os.path.isdir(path):
        file = os.path.join(path, "model.safetensors")
    else:
        from transformers.utils import cached_file

        file = cached_file(path, "model.safetensors", **hub_kwargs)
    if not os.path.isfile(file):
        raise IncompatibleCheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json")
    return [k for k in safetensors_header(file) if k != "__metadata__"]


def checkpoint_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of a local safetensors checkpoint: a directory (one ``model.safetensors``
    or shards with an index) or one file, read from the headers only (a truncated file is an error naming it)."""
    if not os.path.isdir(path):
        files = [path]
    elif os.path.isfile(index_file := os.path.join(path, "model.safetensors.index.json")):
        with open(index_file) as f:
            files = [os.path.join(path, n) for n in sorted(set(json.load(f)["weight_map"].values()))]
    elif os.path.isfile(os.path.join(path, "model.safetensors")):
        files = [os.path.join(path, "model.safetensors")]
    else:
        raise IncompatibleCheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json")
    shapes = {}
    for file in files:
        header = safetensors_header(file)
        shapes.update({k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"})
    return shapes


def check_checkpoint_tensors(path: str, tensors: dict[str, Any]) -> None:
    """Check that checkpoint ``path`` (see ``checkpoint_shapes``) holds every tensor of ``tensors`` (a state
    dict) at its shape and nothing else, before a loader that would only warn (the HF Trainer's resume loads
    with ``strict=False``). Tensors that share storage (tied weights) need one of their names only:
    ``save_pretrained`` writes one. Raises ``IncompatibleCheckpointError`` naming the keys."""
    shapes = checkpoint_shapes(path)
    aliases: dict[tuple, list[str]] = {}
    for name, tensor in tensors.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape)) \
            if tensor.numel() else (name,)
        aliases.setdefault(key, []).append(name)
    missing = [names[0] for names in aliases.values() if not any(n in shapes for n in names)]
    unexpected = set(shapes) - set(tensors)
    mismatched = [f"{k} (checkpoint {list(shapes[k])}, model {list(tensors[k].shape)})" for k in sorted(shapes)
                  if k in tensors and shapes[k] != tuple(tensors[k].shape)]
    problems = _problems(missing, unexpected, mismatched)
    if problems:
        raise IncompatibleCheckpointError(f"{path} does not fit the model being trained: {problems}")


def _describe(keys: set[str] | list, limit: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _problems(missing, unexpected, mismatched) -> str:
    """What does not fit, as one line ("" when everything does)."""
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_describe(mismatched)}")
    return "; ".join(problems)


def load_pretrained(cls, hf_from_pretrained: Callable, path: str, *args: Any, **kwargs: Any):
    """See module docstring. ``hf_from_pretrained`` is transformers' ``PreTrainedModel.from_pretrained``
    bound to ``cls``; the other kwargs (dtype, device_map, ...) go to it."""
    hub_kwargs = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
    config_dict = read_checkpoint_json(str(path), "config.json", hub_kwargs)
    if config_dict is None:
        if os.path.isdir(path):
            raise FileNotFoundError(f"{path}: no config.json (not a checkpoint directory)")
        from huggingface_hub import constants

        offline = " (offline: HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else ""
        raise FileNotFoundError(f"{path}: no config.json: not a directory, nor a hub model id found in the Hugging "
                                f"Face cache {hub_kwargs.get('cache_dir') or constants.HF_HUB_CACHE}{offline}")
    kind = checkpoint_kind(config_dict)
    check_known_keys(config_dict)
    overrides = {k: kwargs.pop(k) for k in CONFIG_OVERRIDES if k in kwargs}
    config = kwargs.pop("config", None)
    if config is None:
        if kind == "vamba":
            config = VambaConfig.from_dict({**config_dict, **overrides})
        else:
            config = VambaConfig.from_qwen2_vl_dict(config_dict, **overrides)
    elif overrides:
        raise ValueError(f"pass either config= or VambaConfig overrides {sorted(overrides)}, not both")
    keys = checkpoint_keys(str(path), hub_kwargs)
    layout_5x = any(k.startswith(("model.language_model.", "model.visual.")) for k in keys)
    key_mapping = KEY_MAPPING_5X if layout_5x else None
    want_info = kwargs.pop("output_loading_info", False)
    if kwargs.pop("ignore_mismatched_sizes", False):
        raise ValueError("ignore_mismatched_sizes is not supported: a shape mismatch is always an error")
    # transformers then reports mismatches instead of raising, so our error can name them.
    with _HeldLoadReport() as report:
        model, info = hf_from_pretrained(path, *args, config=config, key_mapping=key_mapping,
                                         output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
        missing = set(info.get("missing_keys", ()))
        unexpected = set(info.get("unexpected_keys", ()))
        mismatched = info.get("mismatched_keys", ())
        allowed_missing = {k for k in missing if NEW_MODULE_KEYS.search(k)} if kind == "qwen2_vl" else set()
        problems = _problems(missing - allowed_missing, unexpected, [str(m) for m in mismatched])
        if problems:
            raise IncompatibleCheckpointError(f"{path} ({kind} checkpoint) does not fit {cls.__name__} with this "
                                              f"config: {problems}")
        report.expected = True  # only the new modules are missing: our one line replaces transformers' table
    if kind == "qwen2_vl":
        new_cross = {k for k in missing if ".cross_attn." in k}
        if new_cross and config.cross_attn_init == "self_attn":
            model.init_cross_attn_from_self_attn()
        logger.info("%s", load_summary(path, len(keys) - len(unexpected), missing, config.cross_attn_init))
    return (model, info) if want_info else model


def load_summary(path: str, loaded: int, new: set[str], cross_attn_init: str) -> str:
    """One line for a converted Qwen2-VL checkpoint: what was loaded and which new VAMBA tensors were initialised."""
    cross = sum(".cross_attn." in k for k in new)
    mamba = sum(".vision_mixer." in k for k in new)
    alpha = sum(k.endswith(".alpha") for k in new)
    source = "from self_attn" if cross_attn_init == "self_attn" else "random"
    return (f"{path}: loaded {loaded} tensors; initialised {len(new)} new (cross_attn {source}: {cross}, mamba: "
            f"{mamba}, alpha: {alpha}); unexpected 0")


class _HeldLoadReport(logging.Filter):
    """Hold back transformers' ``LOAD REPORT`` table (a warning of ``transformers.modeling_utils`` listing every
    key as MISSING / UNEXPECTED / MISMATCH) while a checkpoint loads. Converting Qwen2-VL, every new cross-attention
    and Mamba-2 tensor is MISSING by design: ``expected = True`` then drops the table for our one-line summary.
    Otherwise (a key that should not be missing, an unexpected or misshapen one, an error inside transformers) the
    held table is logged after all, beside our error naming the keys."""

    def __init__(self) -> None:
        super().__init__()
        self.expected = False
        self.held: list[logging.LogRecord] = []
        self.logger = logging.getLogger("transformers.modeling_utils")

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in str(record.msg):
            self.held.append(record)
            return False
        return True

    def __enter__(self) -> _HeldLoadReport:
        self.logger.addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeFilter(self)
        if not self.expected:
            for record in self.held:
                self.logger.handle(record)


def ensure_plain_qwen2_vl(path: str | os.PathLike, hub_kwargs: dict[str, Any] | None = None) -> None:
    """Refuse a VAMBA checkpoint where a plain Qwen2-VL is expected (e.g. the distillation teacher).

    A released VAMBA checkpoint says ``model_type: qwen2_vl``, so transformers' ``Qwen2VLForConditionalGeneration``
    or ``AutoModelForImageTextToText`` would build plain Qwen2-VL from it and drop every cross-attention and
    Mamba-2 weight with only a warning. Recognised by ``model_type: vamba``, ``vision_mamba_mixer_config`` in
    config.json, or cross_attn / vision_mixer weights. Nothing is checked when config.json is absent (the
    caller's loader reports that)."""
    path = str(path)
    hub_kwargs = hub_kwargs or {}
    config = read_checkpoint_json(path, "config.json", hub_kwargs)
    if config is None:
        return
    reasons = []
    if config.get("model_type") == VambaConfig.model_type:
        reasons.append("config.json has model_type 'vamba'")
    if "vision_mamba_mixer_config" in config:
        reasons.append("config.json has vision_mamba_mixer_config")
    if not reasons:
        try:
            keys = checkpoint_keys(path, hub_kwargs)
        except (IncompatibleCheckpointError, OSError):  # not safetensors (e.g. pytorch_model.bin): config only
            keys = []
        vamba_keys = [k for k in keys if VAMBA_WEIGHT_KEYS.search(k)]
        if vamba_keys:
            reasons.append(f"it holds VAMBA weights ({_describe(vamba_keys, 3)})")
    if reasons:
        raise IncompatibleCheckpointError(
            f"{path} is a VAMBA checkpoint ({'; '.join(reasons)}), not the plain Qwen2-VL expected here: loading it "
            f"as Qwen2-VL would drop its cross-attention and Mamba-2 weights. Load it with "
            f"VambaForConditionalGeneration.from_pretrained, or write a vamba-typed copy with `vamba convert` so the "
            f"Auto classes build the right model (docs/model.md)")
