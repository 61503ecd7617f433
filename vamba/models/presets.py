"""Every model size the package builds without downloading anything, in one place.

- ``vamba_config_for("2b" | "7b")``: the released Qwen2-VL checkpoints' sizes (benchmarks, GPU tests, from-scratch
  runs); the numbers are those of the public Qwen2-VL-2B/7B config.json files.
- ``tiny_vamba_config`` / ``tiny_text_vision`` / ``tiny_qwen2vl``: the one tiny model (``TinyDims``) of training's
  ``model.size=tiny`` and the CPU demo, the benchmarks' ``tiny`` scale and the model tests (each passes its own
  vocabulary and, where it needs other sizes, its own ``TinyDims``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vamba.models.configuration import VambaConfig

MROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}
VISION = dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4, patch_size=14, spatial_merge_size=2,
              temporal_patch_size=2)
SIZES: dict[str, dict[str, Any]] = {
    "2b": dict(text=dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2), tie_word_embeddings=True),
    "7b": dict(text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4), tie_word_embeddings=False),
}


def vamba_config_for(size: str, **overrides: Any) -> VambaConfig:
    """``VambaConfig`` at Qwen2-VL-``size`` dimensions (``"2b"`` or ``"7b"``) with released VAMBA options."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    spec = SIZES[size]
    text = dict(spec["text"], max_position_embeddings=32768, rms_norm_eps=1e-6, rope_parameters=dict(MROPE),
                bos_token_id=151643, eos_token_id=151645)
    vision = dict(VISION, hidden_size=text["hidden_size"])
    return VambaConfig(text_config=text, vision_config=vision, tie_word_embeddings=spec["tie_word_embeddings"],
                       **overrides)


# -- the tiny model: CPU tests, the demo, the benchmarks' CPU checks ---------------------------------------------
@dataclass
class TinyDims:
    """Dimensions of the ``tiny`` model (training's ``model.tiny``, the demo, the benchmarks' ``tiny`` scale, the
    model tests); the vocabulary comes from the tokenizer (or a test's own size)."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    vision_depth: int = 2
    vision_embed_dim: int = 32
    vision_heads: int = 2
    mamba_d_state: int = 16
    mamba_headdim: int = 16
    mamba_chunk_size: int = 64


# bos/eos/pad of a tiny model built without a tokenizer (benchmarks, model tests)
TOKEN_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
# the Qwen2-VL special tokens -> the config keys holding their ids
SPECIAL_TOKENS = {"vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>",
                  "image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>"}


def special_token_ids(tok) -> dict[str, int]:
    """``{vision_start_token_id: ..., ...}``: a Qwen2 tokenizer's ids of the tokens of ``SPECIAL_TOKENS``."""
    return {key: tok.convert_tokens_to_ids(token) for key, token in SPECIAL_TOKENS.items()}


def token_ids(tok) -> dict[str, int]:
    """bos/eos/pad of a tiny model over ``tok`` (bos is the pad token: Qwen2 tokenizers have no bos)."""
    return {"bos_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}


def mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (t, h, w) as Qwen2-VL does (16/24/24 of 64)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def tiny_text_vision(vocab_size: int, dims: TinyDims | None = None, ids: dict[str, int] | None = None,
                     max_position_embeddings: int = 8192) -> tuple[dict[str, Any], dict[str, Any]]:
    """Text and vision sub-configs of a tiny Qwen2-VL-shaped model (plain dicts: VAMBA's and transformers'
    Qwen2-VL configs take them alike). ``ids``: bos/eos/pad (default ``TOKEN_IDS``)."""
    dims = dims or TinyDims()
    head_dim = dims.hidden_size // dims.num_heads
    text = dict(vocab_size=vocab_size, hidden_size=dims.hidden_size, intermediate_size=dims.intermediate_size,
                num_hidden_layers=dims.num_layers, num_attention_heads=dims.num_heads,
                num_key_value_heads=dims.num_kv_heads, max_position_embeddings=max_position_embeddings,
                rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                    "mrope_section": mrope_section(head_dim)},
                **(ids or TOKEN_IDS))
    vision = dict(depth=dims.vision_depth, embed_dim=dims.vision_embed_dim, hidden_size=dims.hidden_size,
                  num_heads=dims.vision_heads, mlp_ratio=2, spatial_merge_size=2, patch_size=14,
                  temporal_patch_size=2)
    return text, vision


def tiny_mamba(dims: TinyDims | None = None) -> dict[str, Any]:
    """The tiny model's Mamba-2 block settings (``vision_mamba_mixer_config``; the rest at VambaConfig's defaults)."""
    dims = dims or TinyDims()
    return dict(d_state=dims.mamba_d_state, headdim=dims.mamba_headdim, chunk_size=dims.mamba_chunk_size)


def tiny_vamba_config(vocab_size: int, dims: TinyDims | None = None, ids: dict[str, int] | None = None,
                      max_position_embeddings: int = 8192, mamba: dict[str, Any] | None = None,
                      **options: Any) -> VambaConfig:
    """``VambaConfig`` of the tiny model: ``tiny_text_vision`` and ``tiny_mamba`` (``mamba``: keys over it, e.g.
    ``backend`` or ``enable``); ``options``: other ``VambaConfig`` arguments (special token ids, attention)."""
    text, vision = tiny_text_vision(vocab_size, dims, ids, max_position_embeddings)
    return VambaConfig(text_config=text, vision_config=vision,
                       vision_mamba_mixer_config={**tiny_mamba(dims), **(mamba or {})}, **options)


def tiny_qwen2vl(tok, dims: TinyDims | None = None, seed: int = 0):
    """A randomly initialised tiny ``Qwen2VLForConditionalGeneration`` over ``tok``'s vocabulary (transformers' own
    class; the CPU demo's teacher, and the Qwen2-VL checkpoint the training tests convert)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text, vision = tiny_text_vision(len(tok), dims, token_ids(tok))
    torch.manual_seed(seed)
    return Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text, vision_config=vision,
                                                         **special_token_ids(tok)))
