"""VAMBA model: configuration, Mamba-2 video block, cross-attention, decoder, loading.

Importing this package registers ``VambaConfig`` / ``VambaForConditionalGeneration`` with transformers'
Auto classes (``AutoConfig``, ``AutoModelForImageTextToText``) under model_type ``vamba``.
"""
from __future__ import annotations

from transformers import AutoConfig, AutoModelForImageTextToText

from vamba.models.cache import VideoCache
from vamba.models.configuration import VambaConfig
from vamba.models.loading import IncompatibleCheckpointError
from vamba.models.modeling import VambaForConditionalGeneration, VambaOutput

AutoConfig.register(VambaConfig.model_type, VambaConfig, exist_ok=True)
AutoModelForImageTextToText.register(VambaConfig, VambaForConditionalGeneration, exist_ok=True)

__all__ = ["IncompatibleCheckpointError", "VambaConfig", "VambaForConditionalGeneration", "VambaOutput", "VideoCache"]
