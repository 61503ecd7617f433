"""Model FLOPs of the benchmarked steps (the counts themselves: ``vamba.models.flops``)."""
from __future__ import annotations

from vamba.models.flops import qwen_llm_flops, train_flops, vamba_llm_flops

# the bench's step kinds as trained parts (vamba.bench.steps.set_trainable)
MODES = {"train": {"text": "full", "video": "full"}, "train_offload": {"text": "full", "video": "full"},
         "train_shared": {"text": "full", "video": "no"}, "stage1": {"text": "no", "video": "full"}}


def llm_flops(name: str, config, setup, mode: str, frames: int) -> float:
    """Model FLOPs of one step's LLM part (``setup``: ``vamba.bench.build.Setup``). prefill: forward. train:
    forward + backward (2x forward). train_shared (VAMBA with only Qwen2-VL's LLM weights trainable): no backward
    through the video stream, so 2x the text side only. stage1 (cross-attention, Mamba-2 blocks and alpha trainable):
    activation gradients everywhere (1x forward) and weight gradients of the video stream's modules (1x its forward;
    the text side's cross-attention q/o weights, ~1% at 128 text tokens, are not counted): ``train_flops``."""
    count = vamba_llm_flops if name == "vamba" else qwen_llm_flops
    video = setup.video_tokens(frames)
    if mode == "prefill":
        return count(config, video, setup.question_tokens, 1)
    forward = count(config, video, setup.train_tokens, setup.train_tokens)
    if name != "vamba":  # Qwen2-VL's whole LLM trains
        return 3 * forward
    return train_flops(forward, count(config, video, 0, 0), MODES[mode])
