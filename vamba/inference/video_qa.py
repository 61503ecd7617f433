"""The VAMBA model behind the evaluation harness (``vamba eval ... model.path=<checkpoint>``).

Implements ``vamba.evaluation.interface.VideoQAModel`` on ``VambaChat``: ``encode_video`` reads exactly the
frames and size the benchmark protocol fixes (``vamba.evaluation.sampling``: the released sampler and
pre-resize), streams them through the model once, and ``answer`` asks each question against the cached
cross-attention K/V with the protocol's decoding settings and returns the reply as generated.
"""
from __future__ import annotations

import os
from dataclasses import replace

from vamba.evaluation.interface import GenerationSettings, VideoRequest
from vamba.evaluation.sampling import frame_indices
from vamba.inference.chat import DEFAULT_DECODE_TIMEOUT_S, EncodedVideo, VambaChat
from vamba.inference.video import folder_reader, open_with_timeout


class VambaVideoQA:
    """``VideoQAModel`` for VAMBA checkpoints (see module docstring)."""

    def __init__(self, chat: VambaChat) -> None:
        self.chat = chat

    def encode_video(self, video: VideoRequest) -> EncodedVideo:
        if video.is_frame_folder:
            reader = folder_reader(video.path, video.frame_folder_fps or 25.0)
            info = reader.info()
        else:  # within the chat's decode timeout: decord can hang opening a file, too
            reader, info = open_with_timeout(video.path, timeout_s=self.chat.decode_timeout_s)
        indices = frame_indices(video, info.num_frames, info.fps)
        if video.is_frame_folder:
            # Frame-folder samplers count from the first file's number (MVBench: 1); the reader from 0.
            indices = [min(max(i - video.first_frame_index, 0), info.num_frames - 1) for i in indices]
        # The protocol fixes the edge rule; the pixel limits are the checkpoint's (or model.min/max_pixels).
        vision = replace(self.chat.vision, shortest_edge=video.frames.shortest_edge,
                         longest_edge=video.frames.longest_edge)
        return self.chat.encode(video.path, indices=indices, reader=reader, vision=vision)

    def answer(self, encoded: EncodedVideo, prompt: str, generation: GenerationSettings) -> str:
        """The reply as generated (nothing stripped: extraction sees what the released scripts see), ended by
        the tokenizer's eos token alone, as the released evaluation (docs/evaluation.md, "Decoding")."""
        return self.chat.reply(encoded, prompt, max_new_tokens=generation.max_new_tokens,
                               do_sample=generation.do_sample, temperature=generation.temperature,
                               top_p=generation.top_p, top_k=generation.top_k, seed=generation.seed,
                               eos_token_ids=[self.chat.tokenizer.eos_token_id])


def load_video_qa_model(path: str | os.PathLike | None, device: str = "auto", dtype: str = "bfloat16",
                        piece_frames: int = 128, min_pixels: int | None = None,
                        max_pixels: int | None = None,
                        decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S) -> VambaVideoQA:
    """Factory named by ``vamba eval``'s default ``model.adapter``. Pixel limits: the checkpoint's processor files
    (``VambaChat.from_pretrained``) unless given."""
    if path is None:
        raise ValueError("model.path=<checkpoint directory> is required")
    chat = VambaChat.from_pretrained(path, device=device, dtype=dtype, piece_frames=piece_frames,
                                     decode_timeout_s=decode_timeout_s)
    limits = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    chat.vision = replace(chat.vision, **limits)
    return VambaVideoQA(chat)
