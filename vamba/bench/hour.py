"""The hour answered end to end from a video file (``vamba bench points=vamba:answer_file:3600 answer_video=F``).

What a user's ``VambaChat`` does with an hour of video at 1 fps: the file is decoded (decord when installed, else
PyAV), its frames resized and cut into patches (``vamba.inference.video.VideoPlan.pieces``: one decoding thread, a
pool of resizing threads, uint8 frames normalised on the GPU), streamed through the vision tower and the LLM in
pieces (``VambaChat.encode``), then a question is prefilled against the video cache and ``answer_tokens`` tokens are
decoded greedily, as ``VambaChat.reply`` decodes them (on CUDA ``vamba.models.fast_decode.greedy_decode``, the
static loop in a CUDA graph; ``generate`` elsewhere; the row's ``decode_loop``; before 2026-12-07 always
``generate``). Measured once, from the first frame decoded: time to first token, decode tokens/s, peak memory,
the vision tower's share, and the host's decoding and resizing time with the part of it the GPU waited for.
The question is text of the tiny local tokenizer (``vamba.data.tiny_tokenizer``; its ids exist in every VAMBA
vocabulary); with random weights the reply is noise, so generation is held to exactly ``answer_tokens`` tokens.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from transformers.generation.streamers import BaseStreamer

from vamba.models.fast_decode import greedy_decode
from vamba.utils.timing import GIB, free, is_oom

QUESTION = "What happens in the video? Describe the scenes in order."


class TokenClock(BaseStreamer):
    """A transformers streamer that only notes when each generated token reaches the host (``put`` is called with
    the prompt first, then with every new token after it has been copied to the host)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def wait_for(path: Path, timeout_s: float) -> str | None:
    """The video may still be being written by another process: it appears under its name when complete, and a
    writer that fails leaves ``<path>.failed`` with its reason. Returns None when the video is there, else why not."""
    failed = Path(f"{path}.failed")
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if failed.exists():
            return f"the writer of {path} failed: {failed.read_text()[:300]}"
        if time.monotonic() > deadline:
            return f"{path} was not written within {timeout_s} s"
        time.sleep(0.5)
    return None


def answer_from_file(model, video: Path, frames: int, answer_tokens: int, piece_frames: int, workers: int,
                     vision_ms=None) -> dict[str, Any]:
    """One end-to-end answer (module docstring); ``vision_ms()``: milliseconds spent in the vision tower since its
    last call (the benchmark's hooks). Returns the row's fields (``status`` ok / oom / error)."""
    from vamba.data.tiny_tokenizer import build_tiny_tokenizer
    from vamba.inference.chat import VambaChat

    device = model.lm_head.weight.device
    cuda = device.type == "cuda"
    chat = VambaChat(model, build_tiny_tokenizer(), piece_frames=piece_frames, workers=workers)
    ids = torch.tensor([chat.prompt_ids([(QUESTION, None)])], device=device)
    clock = TokenClock()
    free(device)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if cuda else 0
    if vision_ms is not None:
        vision_ms()
    started = time.perf_counter()
    try:
        encoded = chat.encode(video, indices=range(frames))
        if cuda:
            torch.cuda.synchronize()
        encoded_at = time.perf_counter()
        if cuda:  # as VambaChat.reply decodes greedily on CUDA (decode="auto"): the static loop and its graph
            out = greedy_decode(model, ids, encoded.cache, answer_tokens, chat.eos_token_ids, chat.pad_token_id,
                                min_new_tokens=answer_tokens, streamer=clock)
        else:
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), video_cache=encoded.cache,
                                     max_new_tokens=answer_tokens, min_new_tokens=answer_tokens, do_sample=False,
                                     temperature=None, top_p=None, top_k=None, eos_token_id=chat.eos_token_ids,
                                     pad_token_id=chat.pad_token_id, streamer=clock)
    except Exception as e:  # noqa: BLE001 - recorded like a sweep point
        free(device)
        return {"status": "oom"} if is_oom(e) else {"status": "error", "error": f"{type(e).__name__}: {e}"[:500]}
    generated = out.shape[1] - ids.shape[1]
    first, last = clock.times[1], clock.times[-1]  # times[0]: the prompt handed to the streamer
    host = encoded.host
    row: dict[str, Any] = {
        "status": "ok", "video": Path(video).name, "answer_tokens": generated, "question_tokens": ids.shape[1],
        "piece_frames": piece_frames, "workers": workers, "decode_loop": "static" if cuda else "generate",
        "total_ms": round(1e3 * (last - started), 2),
        "time_to_first_token_ms": round(1e3 * (first - started), 2),
        "encode_ms": round(1e3 * (encoded_at - started), 2),
        "decode_tokens_per_s": round((generated - 1) / max(last - first, 1e-9), 2),
        "host_decode_s": round(host.decode_s, 3), "host_resize_s": round(host.resize_s, 3),
        "host_wait_s": round(host.wait_s, 3),
        "host_wait_share": round(host.wait_s / max(encoded_at - started, 1e-9), 4),
    }
    if vision_ms is not None:
        row["vision_ms"] = round(vision_ms(), 3)
        row["llm_ms"] = round(row["encode_ms"] - row["vision_ms"], 3)  # encoding only: frames waited for included
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        row.update(peak_gib=round(peak / GIB, 3), peak_above_start_gib=round((peak - before) / GIB, 3),
                   start_gib=round(before / GIB, 3), reserved_gib=round(torch.cuda.max_memory_reserved() / GIB, 3))
    del encoded, out
    free(device)
    return row
