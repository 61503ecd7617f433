"""The contract between the evaluation harness and a model: what a benchmark fixes, what a model does.

The harness never decodes video nor runs a network. For every distinct video input it asks the model
to ``encode_video`` once (decode, sample, resize, run the vision tower and the video stream), then asks
``answer`` once per question with the cached state. For VAMBA the cached state is what makes this cheap:
text never flows into the video stream, so every question of a video reuses the same per-layer
cross-attention keys/values (paper Sec. 3).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, runtime_checkable

# "uniform_midpoint": the VAMBA eval scripts' ``uniform_indices`` (midpoints of integer linspace segments).
# "mvbench_segments": MVBench's own sampler (segment midpoints within optional [start, end] bounds).
Sampling = Literal["uniform_midpoint", "mvbench_segments"]


@dataclass(frozen=True)
class FrameSettings:
    """How a protocol turns a video into frames (docs/evaluation.md, "Protocols").

    ``shortest_edge``/``longest_edge`` are the bicubic pre-resize bounds (``None`` = keep the native
    size, as VAMBA's NExT-QA run with ``do_resize=False``); the Qwen2-VL processor still rounds each
    side to a multiple of 28 afterwards.
    """

    num_frames: int
    sampling: Sampling = "uniform_midpoint"
    shortest_edge: int | None = 256
    longest_edge: int | None = 480


@dataclass(frozen=True)
class VideoRequest:
    """One video input exactly as the protocol fixes it; equal requests share one encoding.

    ``path`` is a video file, or a folder of frames when ``is_frame_folder`` (MVBench's TVQA clips:
    ``00001.jpg``..., assumed ``frame_folder_fps``, first index ``first_frame_index``).
    ``start``/``end`` (seconds) bound the sampled range (MVBench tasks with temporal bounds).
    """

    path: str
    frames: FrameSettings
    start: float | None = None
    end: float | None = None
    is_frame_folder: bool = False
    frame_folder_fps: float | None = None
    first_frame_index: int = 0


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings (docs/evaluation.md, "Decoding"). ``seed`` makes sampled decoding reproducible: the
    runner passes a per-question seed derived from it, so a resumed run draws the same samples.

    A model applies every field as given, whatever its checkpoint's ``generation_config`` says:
    ``top_k=None`` is no top-k filter (what the released scripts pass), not a default of 50.
    """

    max_new_tokens: int = 512
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None

    def with_seed(self, seed: int | None) -> GenerationSettings:
        return replace(self, seed=seed)


@runtime_checkable
class VideoQAModel(Protocol):
    """What a model must provide to be evaluated.

    ``prompt`` is the user turn text only (e.g. "Select the best answer ...\\n<question>..."); the model
    adds its chat template and marks the video (VAMBA: ``<|vision_start|><|vision_end|>`` before the
    text, system prompt "You are a helpful assistant.") and returns the decoded reply without special
    tokens, as generated: nothing stripped, because the answer rules see the raw reply.

    ``encode_video`` raises ``vamba.data.video.VideoDecodeError`` (or ``vamba.evaluation.runner.VideoUnavailableError``)
    for a video that cannot be decoded: the runner skips its questions, counted. Any other error stops the run.

    Optional, used when present:

    - ``prefetch(requests: Sequence[VideoRequest]) -> None``: the runner calls it once before its first
      ``encode_video`` with the videos it will ask for, in its order (this rank's videos with questions left), and
      with an empty list when it ends, however it ends. A model may decode them ahead (VAMBA: worker processes,
      ``model.decode_workers``); the list is a plan, not a promise: a video may be asked for or not.
    - ``answer_many(encoded, prompts: Sequence[str], generation) -> list[str]``: the replies to several prompts
      about one video, each what ``answer`` gives it alone (greedy decoding: the runner never asks it to sample),
      e.g. decoded as one batch. The runner uses it with ``answer_batch`` > 1 (``model.answer_batch``).
    - the encoded object's ``timing``: a mapping of host seconds for the video; its ``wait_s`` (seconds of
      ``encode_video`` spent waiting for decoded frames) separates waiting from computing in the run's timing.
    """

    def encode_video(self, video: VideoRequest) -> Any: ...

    def answer(self, encoded: Any, prompt: str, generation: GenerationSettings) -> str: ...

