"""What ``VambaForConditionalGeneration.forward`` returns (``VambaOutput``) and the name of its text-cache field in the
installed transformers (``CACHE_NAME``)."""
from __future__ import annotations

from dataclasses import field, make_dataclass
from typing import Any

from transformers.generation import utils as generation_utils
from transformers.modeling_outputs import ModelOutput

# transformers 5.24 renamed the text KV cache, as argument and as output field, from ``past_key_values`` to
# ``cache``; 5.17 (the GPU image) knows only the old name. forward takes both; outputs and generation use this one.
CACHE_NAME = "cache" if "cache" in generation_utils.ALL_CACHE_NAMES else "past_key_values"


# The output's text-cache field has the current name only: under 5.24 a field named ``past_key_values`` is itself
# deprecated (every output construction, and every read of it, logs transformers' deprecation warning).
VambaOutput = make_dataclass("VambaOutput", [
    ("loss", "torch.Tensor | None", field(default=None)),
    ("logits", "torch.Tensor | None", field(default=None)),
    (CACHE_NAME, Any, field(default=None)),
    ("video_cache", "VideoCache | None", field(default=None)),
    ("last_hidden_state", "torch.Tensor | None", field(default=None)),
], bases=(ModelOutput,))
VambaOutput.__module__ = __name__  # (make_dataclass's module= needs Python 3.12)
VambaOutput.__doc__ = """loss: scalar (when labels are given); logits: [B, N or logits_to_keep, V] (when asked);
    cache (``past_key_values`` before transformers 5.24; the field is named ``CACHE_NAME``): the text KV cache;
    video_cache: cross-attention K/V per layer; last_hidden_state: [B, N, D]."""
