"""Model sizes of the released Qwen2-VL checkpoints, for building VAMBA models without downloading anything
(benchmarks, GPU tests, from-scratch runs). Numbers are those of the public Qwen2-VL-2B/7B config.json files."""
from __future__ import annotations

from typing import Any

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
