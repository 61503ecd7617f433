"""The measured steps of both models (``vamba.bench.efficiency``) and which parameters each step trains.

A step factory takes a frame count and returns a closure that runs one step on fixed random inputs:

- ``prefill``: video + a short question -> caches and the first token's logits (no grad). VAMBA streams the video
  (``vamba.inference.streaming.VideoStream``, ``piece_frames`` frames per piece); Qwen2-VL runs one forward with
  one ``<|video_pad|>`` per merged video token.
- ``train``: one forward+backward with gradient checkpointing, loss on the text tokens only for both models
  (Qwen2-VL's logits are taken for the text positions only). ``train_offload``: VAMBA's ``train`` with each
  checkpointed layer's inputs in pinned host memory (``set_checkpoint_offload``; ``step.extra["host_bytes"]``).
- ``answer`` (VAMBA): the streamed prefill, then greedy decoding of a number of tokens against the video cache (on
  CUDA by ``vamba.models.fast_decode.greedy_decode``, as ``VambaChat.reply``; ``generate`` before 2026-12-07 and on
  the CPU).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from vamba.bench.build import Setup
from vamba.inference.streaming import VideoStream
from vamba.models.fast_decode import greedy_decode
from vamba.models.names import NEW_MODULES, VISION_TOWER, matches_any
from vamba.training.params import TRAINABLE

Step = Callable[[], None]


def trainable(model, names: Callable[[str], bool]) -> int:
    """``requires_grad`` by a rule over parameter names; returns the number of trainable elements."""
    count = 0
    for name, p in model.named_parameters():
        p.requires_grad_(names(name))
        count += p.numel() if p.requires_grad else 0
    return count


def set_trainable(model, name: str, mode: str) -> int:
    """requires_grad for a step kind; returns the number of trainable parameters.

    train: the LLM (everything outside ``VISION_TOWER``; VAMBA: with its cross-attention, Mamba-2 blocks and
    alpha, minus the last layer's Mamba-2 block, which feeds nothing). train_shared: only the weights VAMBA
    shares with Qwen2-VL's LLM (less ``NEW_MODULES``). stage1: ``TRAINABLE["pretrain"]``. prefill: nothing.
    The patterns are training's (``vamba.training.params``).
    """
    dead = set(model.parameters_without_effect()) if name == "vamba" else set()

    def rule(n: str) -> bool:
        if mode == "prefill" or n in dead or matches_any(n, VISION_TOWER):
            return False
        if mode == "stage1":
            return matches_any(n, TRAINABLE["pretrain"])
        return not (mode == "train_shared" and matches_any(n, NEW_MODULES))

    return trainable(model, rule)


def vamba_steps(model, setup: Setup) -> dict[str, Callable[..., Step]]:
    """prefill: streaming video prefill + the question. train (and train_shared, stage-1): forward+backward."""
    vocab = model.config.text_config.vocab_size

    def prefill(frames: int, piece_frames: int | None = None, answer_tokens: int = 0) -> Step:
        """Streaming prefill + question; with ``answer_tokens``, also greedy-decode that many tokens."""
        piece = max(2, min(piece_frames or setup.piece_frames, frames))
        piece_pixels, piece_grid = setup.pixels(piece)  # the same piece content each time: timing only
        question = setup.text(setup.question_tokens, vocab)
        h, w = setup.grid_hw

        def run() -> None:
            model.eval()
            with torch.no_grad():
                stream = VideoStream(model, (frames // 2, h, w))
                done = 0
                while done < frames // 2:
                    t = min(piece // 2, frames // 2 - done)
                    stream.push(piece_pixels[:t * h * w], piece_grid.new_tensor([[t, h, w]]))
                    done += t
                if answer_tokens and question.is_cuda:  # as VambaChat.reply decodes greedily on CUDA
                    greedy_decode(model, question, stream.finish(), answer_tokens, [], 0,
                                  min_new_tokens=answer_tokens)
                elif answer_tokens:
                    model.generate(input_ids=question, attention_mask=torch.ones_like(question),
                                   video_cache=stream.finish(), max_new_tokens=answer_tokens,
                                   min_new_tokens=answer_tokens, do_sample=False, pad_token_id=0)
                else:
                    model(input_ids=question, video_cache=stream.finish(), use_cache=True, logits_to_keep=1)

        return run

    def train(frames: int, offload: bool = False) -> Step:
        pixels, grid = setup.pixels(frames)
        ids = setup.text(setup.train_tokens, vocab)

        def run() -> None:
            model.train()
            model.set_checkpoint_offload(offload)
            try:
                model(input_ids=ids, labels=ids, pixel_values=pixels, grid_thw=grid).loss.backward()
                if offload:
                    run.extra = {"host_bytes": model.offloaded_bytes}
            finally:
                model.set_checkpoint_offload(False)
                model.zero_grad(set_to_none=True)

        run.extra = {}
        return run

    offload = functools.partial(train, offload=True)

    # Warm-up in two pieces: the second piece runs the kernels' continue-from-state variants (own compilation).
    return {"prefill": prefill, "train": train, "train_shared": train, "train_offload": offload, "stage1": train,
            "answer": prefill, "prefill_warmup": lambda n: prefill(n, piece_frames=max(2, n // 2 // 2 * 2)),
            "train_warmup": train, "train_shared_warmup": train, "train_offload_warmup": offload}


def qwen_steps(model, setup: Setup) -> dict[str, Callable[[int], Step]]:
    """transformers' Qwen2-VL: prefill (one forward over video pads + question) and train (text loss)."""
    vocab = model.config.text_config.vocab_size
    pad = model.config.video_token_id

    def batch(frames: int, n_text: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        pixels, grid = setup.pixels(frames)
        m = setup.video_tokens(frames)
        text = setup.text(n_text, vocab, avoid=pad)
        ids = torch.cat([torch.full((1, m), pad, device=setup.device), text], dim=1)
        mm = torch.cat([torch.full((1, m), 2, device=setup.device), torch.zeros_like(text)], dim=1)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mm_token_type_ids": mm,
                "pixel_values_videos": pixels, "video_grid_thw": grid}, text

    def prefill(frames: int) -> Step:
        inputs, _ = batch(frames, setup.question_tokens)

        def run() -> None:
            model.eval()
            with torch.no_grad():
                model(**inputs, use_cache=True, logits_to_keep=1)

        return run

    def train(frames: int) -> Step:
        inputs, text = batch(frames, setup.train_tokens)

        def run() -> None:
            model.train()
            try:
                # Loss on the text tokens only, from their logits only (as VAMBA's chunked loss does).
                logits = model(**inputs, use_cache=False, logits_to_keep=text.shape[1]).logits
                loss = F.cross_entropy(logits[0, :-1].float(), text[0, 1:])
                loss.backward()
            finally:
                model.zero_grad(set_to_none=True)

        return run

    return {"prefill": prefill, "train": train, "prefill_warmup": prefill, "train_warmup": train}
