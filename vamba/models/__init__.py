"""VAMBA model: configuration, Mamba-2 video block, cross-attention, decoder, loading.

Importing this package registers ``VambaConfig`` / ``VambaForConditionalGeneration`` / ``VambaProcessor`` with
transformers' Auto classes (``AutoConfig``, ``AutoModelForImageTextToText``, ``AutoProcessor``) under model_type
``vamba``: ``import vamba.models`` before ``AutoProcessor.from_pretrained(checkpoint)``.
"""
from __future__ import annotations

from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

# NOTE: the one import of vamba.data in vamba.models, for the Auto registration only (the processor lives with the
# data pipeline; registering it here keeps "import vamba.models" the single call that sets up every Auto class).
from vamba.data.processor import VambaProcessor
from vamba.models.cache import VideoCache
from vamba.models.configuration import VambaConfig
from vamba.models.loading import IncompatibleCheckpointError
from vamba.models.modeling import VambaForConditionalGeneration, VambaOutput

AutoConfig.register(VambaConfig.model_type, VambaConfig, exist_ok=True)
AutoModelForImageTextToText.register(VambaConfig, VambaForConditionalGeneration, exist_ok=True)
AutoProcessor.register(VambaConfig, VambaProcessor, exist_ok=True)

__all__ = ["IncompatibleCheckpointError", "VambaConfig", "VambaForConditionalGeneration", "VambaOutput", "VideoCache"]
