"""Evaluation adapter (``vamba.evaluation.interface.VideoQAModel``) for a Qwen2-VL transformer, e.g. the teacher
of a training run (the CPU demo evaluates its teacher with it, ``vamba.recipes.demo``).

It reads frames and patches exactly as training does (``vamba.data``: uniform sampling, the request's resize
edges, Qwen2-VL patchify), prompts with the training chat template and inserts the ``<|video_pad|>`` tokens
Qwen2-VL expects (``vamba.data.teacher_view``). The patches are kept per video; the model attends over video +
text in one sequence, so it runs over the video again with each question. VAMBA checkpoints use
``vamba.inference.video_qa``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vamba.data.chat import Message, encode_chat
from vamba.data.sampling import FrameSampling
from vamba.data.teacher_view import build_teacher_view
from vamba.data.video import read_video
from vamba.data.vision import VisionConfig, process_frames
from vamba.evaluation.interface import GenerationSettings, VideoRequest

MARKERS = "<|vision_start|><|vision_end|>"


@dataclass
class VideoPatches:
    """One video as Qwen2-VL patches: ``pixel_values [P, 1176]``, ``grid_thw [1, 3]``."""

    pixel_values: Tensor
    grid_thw: Tensor


def read_patches(request: VideoRequest, min_pixels: int = 56 * 56, max_pixels: int = 224 * 224) -> VideoPatches:
    if request.start is not None or request.end is not None or request.is_frame_folder:
        raise ValueError("time-bounded requests and frame folders are not supported by this adapter")
    frames = read_video(request.path, FrameSampling("uniform", request.frames.num_frames)).frames
    vision = VisionConfig(shortest_edge=request.frames.shortest_edge, longest_edge=request.frames.longest_edge,
                          min_pixels=min_pixels, max_pixels=max_pixels)
    pixel_values, grid = process_frames(frames, vision)
    return VideoPatches(pixel_values, grid)


def prompt_ids(tokenizer, prompt: str) -> Tensor:
    """``[1, N]`` ids of the user turn (video markers first) plus the assistant header, as in training."""
    encoded = encode_chat([Message("user", MARKERS + prompt)], tokenizer, add_generation_prompt=True,
                          require_target=False)
    return torch.tensor([encoded.input_ids])


def _generate_kwargs(tokenizer, generation: GenerationSettings) -> dict:
    kwargs = dict(max_new_tokens=generation.max_new_tokens, do_sample=generation.do_sample,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if generation.do_sample:
        kwargs.update(temperature=generation.temperature, top_p=generation.top_p, top_k=generation.top_k)
        if generation.seed is not None:
            torch.manual_seed(generation.seed)
    return kwargs


class Qwen2VLVideoQA:
    """``VideoQAModel`` for a transformers ``Qwen2VLForConditionalGeneration`` and its tokenizer (module docstring)."""

    def __init__(self, model, tokenizer, min_pixels: int = 56 * 56, max_pixels: int = 224 * 224) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.pixels = (min_pixels, max_pixels)
        self.device = next(model.parameters()).device
        self.ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|video_pad|>")}

    def encode_video(self, video: VideoRequest) -> VideoPatches:
        return read_patches(video, *self.pixels)

    @torch.no_grad()
    def answer(self, encoded: VideoPatches, prompt: str, generation: GenerationSettings) -> str:
        ids = prompt_ids(self.tokenizer, prompt)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": encoded.pixel_values,
                 "grid_thw": encoded.grid_thw, "visual_row": torch.zeros(1, dtype=torch.long)}
        view = build_teacher_view(batch, vision_start_id=self.ids["<|vision_start|>"],
                                  video_pad_id=self.ids["<|video_pad|>"], pad_id=self.tokenizer.pad_token_id)
        inputs = {k: v.to(self.device) for k, v in view.inputs.items()}
        n = inputs["input_ids"].shape[1]
        out = self.model.generate(**inputs, **_generate_kwargs(self.tokenizer, generation))
        # the reply as generated, as VAMBA's adapter returns it (docs/evaluation.md, "Decoding")
        return self.tokenizer.decode(out[0, n:], skip_special_tokens=True)
