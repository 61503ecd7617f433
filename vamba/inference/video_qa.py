"""The VAMBA model behind the evaluation harness (``vamba eval ... model.path=<checkpoint>``).

Implements ``vamba.evaluation.interface.VideoQAModel`` on ``VambaChat``: ``encode_video`` reads exactly the
frames and size the benchmark protocol fixes (``vamba.evaluation.sampling``: the released sampler and
pre-resize), streams them through the model once, and ``answer`` asks each question against the cached
cross-attention K/V with the protocol's decoding settings and returns the reply as generated. ``prefetch``
(called by the runner with its upcoming videos) has worker processes decode them ahead
(``vamba.inference.prefetch``), so that a GPU is not idle while the next hour-long video decodes.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace

from vamba.data.video_processor import VambaVideoProcessor
from vamba.evaluation.interface import GenerationSettings, VideoRequest
from vamba.inference.chat import DEFAULT_DECODE_TIMEOUT_S, EncodedVideo, VambaChat, resolve_device
from vamba.inference.prefetch import FramePrefetcher, open_request, request_vision


def auto_decode_workers(device_type: str) -> int:
    """Decode worker processes by default: on a CUDA device the CPU cores of this rank (those this process may run
    on, shared by torchrun's ``LOCAL_WORLD_SIZE`` ranks) less one for the model's own process; on a CPU none (the
    model computes on the same cores)."""
    if device_type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1))) - 1)


class VambaVideoQA:
    """``VideoQAModel`` for VAMBA checkpoints (see module docstring). ``decode_workers``: processes decoding the
    videos ``prefetch`` lists ahead of ``encode_video`` (0: each video is decoded when it is encoded, in this
    process); ``decode_ahead``: at most that many videos decoding or decoded and waiting (default workers + 2);
    ``decode_split``: a video the model would wait for is split among the idle workers (``FramePrefetcher``)."""

    def __init__(self, chat: VambaChat, decode_workers: int = 0, decode_ahead: int | None = None,
                 decode_split: bool = True, prefetcher: FramePrefetcher | None = None) -> None:
        check_reading(decode_workers, decode_ahead)
        self.chat = chat
        self.decode_workers = decode_workers
        self.decode_ahead = decode_ahead if decode_ahead is not None else decode_workers + 2
        self.decode_split = decode_split
        # already started by load_video_qa_model (its workers spawned while the weights loaded), else at prefetch
        self._prefetcher: FramePrefetcher | None = prefetcher

    def prefetch(self, requests: Sequence[VideoRequest]) -> None:
        """Decode these videos ahead, in this order, on ``decode_workers`` processes (the runner's upcoming
        videos); an empty list stops the workers."""
        if not requests or self.decode_workers == 0:
            self.close()
            return
        reading = (self.chat.vision, self.chat.piece_frames, self.chat.decode_timeout_s)
        if self._prefetcher is not None and reading != (self._prefetcher.vision, self._prefetcher.piece_frames,
                                                        self._prefetcher.timeout_s):
            self.close()  # started before the chat's reading settings changed: its frames would not be the chat's
        if self._prefetcher is None:
            self._prefetcher = FramePrefetcher(self.decode_workers, self.decode_ahead, self.chat.vision,
                                               self.chat.piece_frames, self.chat.decode_timeout_s,
                                               split=self.decode_split)
        self._prefetcher.start(requests)

    def close(self) -> None:
        """Stop the decode workers, if any."""
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None

    def encode_video(self, video: VideoRequest) -> EncodedVideo:
        ready = self._prefetcher.take(video) if self._prefetcher is not None else None
        if ready is not None:
            return self.chat.encode(video.path, ready=ready)
        started = time.perf_counter()  # the time limit covers the opening and the decoding together
        reader, _, indices = open_request(video, self.chat.decode_timeout_s)
        return self.chat.encode(video.path, indices=indices, reader=reader,
                                vision=request_vision(video, self.chat.vision), spent_s=time.perf_counter() - started)

    def answer(self, encoded: EncodedVideo, prompt: str, generation: GenerationSettings) -> str:
        """The reply as generated (nothing stripped: extraction sees what the released scripts see), ended by
        the tokenizer's eos token alone, as the released evaluation (docs/evaluation.md, "Decoding")."""
        return self.chat.reply(encoded, prompt, max_new_tokens=generation.max_new_tokens,
                               do_sample=generation.do_sample, temperature=generation.temperature,
                               top_p=generation.top_p, top_k=generation.top_k, seed=generation.seed,
                               eos_token_ids=[self.chat.tokenizer.eos_token_id])


    def answer_many(self, encoded: EncodedVideo, prompts: Sequence[str], generation: GenerationSettings) -> list[str]:
        """Greedy replies to several prompts about one video decoded as one batch (``VambaChat.reply_many``), each as
        ``answer`` gives it alone (token for token in float32; in bfloat16 a padded batch may round otherwise)."""
        if generation.do_sample:
            raise ValueError("answer_many decodes greedily; sampling (do_sample=True) is one question at a time "
                             "with its own seed (answer)")
        return self.chat.reply_many(encoded, prompts, max_new_tokens=generation.max_new_tokens,
                                    eos_token_ids=[self.chat.tokenizer.eos_token_id])


def load_video_qa_model(path: str | os.PathLike | None, device: str = "auto", dtype: str = "auto",
                        piece_frames: int = 128, min_pixels: int | None = None,
                        max_pixels: int | None = None,
                        decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S, decode_workers: int | None = None,
                        decode_ahead: int | None = None, decode_split: bool = True,
                        fp8: str = "none") -> VambaVideoQA:
    """Factory named by ``vamba eval``'s default ``model.adapter``. Pixel limits: the checkpoint's processor files
    (``VambaChat.from_pretrained``) unless given; ``decode_workers`` None: ``auto_decode_workers``; ``fp8``:
    ``VambaConfig.fp8``."""
    if path is None:
        raise ValueError("model.path=<checkpoint directory> is required")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    if decode_workers is None:
        decode_workers = auto_decode_workers(resolve_device(device).type)
    check_reading(decode_workers, decode_ahead)
    limits = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    settings = VambaVideoProcessor.from_pretrained(path)  # what VambaChat.from_pretrained would read
    vision = replace(settings.vision_config(), **limits)
    # The decode workers start now: spawning them and importing torch there (~10-20 s for 15 on a GPU host) happens
    # while the weights load, so the run's first video waits for its decoding only (27.5 s on 2026-12-07 with the
    # workers spawned after the load: docs/results/eval_launched_h100.md).
    prefetcher = None
    if decode_workers:
        ahead = decode_ahead if decode_ahead is not None else decode_workers + 2
        prefetcher = FramePrefetcher(decode_workers, ahead, vision, piece_frames, decode_timeout_s, split=decode_split)
        prefetcher.start([])
    try:
        chat = VambaChat.from_pretrained(path, device=device, dtype=dtype, piece_frames=piece_frames,
                                         decode_timeout_s=decode_timeout_s, fp8=fp8, vision=vision,
                                         sampling=settings.frame_sampling())
    except BaseException:
        if prefetcher is not None:
            prefetcher.close()
        raise
    return VambaVideoQA(chat, decode_workers, decode_ahead, decode_split, prefetcher=prefetcher)


def check_reading(decode_workers: int, decode_ahead: int | None) -> None:
    """``model.decode_workers`` >= 0 and ``model.decode_ahead`` (None: workers + 2) >= 1, else a ValueError."""
    if decode_workers < 0 or (decode_ahead is not None and decode_ahead < 1):
        raise ValueError(f"model.decode_workers must be >= 0 and model.decode_ahead >= 1, got {decode_workers} "
                         f"and {decode_ahead}")
