"""Benchmarks, answer extraction, metrics and the resumable evaluation runner.

Read in this order: ``interface`` (what a model provides), ``benchmarks/`` (one module per benchmark:
official files, prompts of the ``vamba`` and ``lmms_eval`` protocols, metrics), ``extraction`` (answer
rules), ``runner`` (encode each video once, record every answer, resume, merge shards), ``cli``
(``vamba eval``), ``lmms_eval_adapter`` (lmms-eval plugin). docs/evaluation.md is the user guide.
"""
from vamba.evaluation.benchmarks import NAMES, get_benchmark
from vamba.evaluation.interface import FrameSettings, GenerationSettings, VideoQAModel, VideoRequest
from vamba.evaluation.runner import VideoUnavailableError, evaluate, finalize, rescore_file, resolve_protocol

__all__ = ["NAMES", "FrameSettings", "GenerationSettings", "VideoQAModel", "VideoRequest", "VideoUnavailableError",
           "evaluate", "finalize", "get_benchmark", "rescore_file", "resolve_protocol"]
