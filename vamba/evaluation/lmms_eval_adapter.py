"""lmms-eval plugin: evaluate a VAMBA checkpoint with lmms-eval's own tasks, prompts and scoring.

Registered through lmms-eval's entry-point group ``lmms_eval.models`` (see pyproject.toml), so after
``pip install -e .`` next to lmms-eval::

    lmms-eval --model vamba --model_args pretrained=/ckpt/Vamba-Qwen2-VL-7B \\
        --tasks videomme,mlvu_dev,longvideobench_val_v --batch_size 1

Frames per task come from our benchmark modules (one source of truth): LVBench's 1,024 frames at 256/560,
Video-MME's 512 at 256/480, and so on; ``num_frames`` / ``shortest_edge`` / ``longest_edge`` override them.

lmms-eval is imported only when lmms-eval asks for the model class; this module is importable without
it. ``LmmsEvalBridge`` holds the logic (group requests by video, encode each video once, answer, keep
lmms-eval's request order); ``VambaLmms`` is the thin ``lmms_eval.api.model.lmms`` subclass around it.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

from vamba.evaluation.benchmarks import NAMES, get_benchmark
from vamba.evaluation.interface import FrameSettings, GenerationSettings, VideoQAModel, VideoRequest
from vamba.evaluation.sharding import dist_env

MODEL_ID = "vamba"
CLASS_PATH = "vamba.evaluation.lmms_eval_adapter.VambaLmms"
# lmms-eval tasks that set no max_new_tokens get this (its HF video models use 16-1024; a letter needs few).
DEFAULT_MAX_NEW_TOKENS = 128


def manifest():
    """Entry-point payload for lmms-eval's model registry (``lmms_eval.models`` group)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)


def generation_from_kwargs(kwargs: Mapping[str, Any]) -> GenerationSettings:
    """lmms-eval ``generation_kwargs`` -> our settings (temperature 0 means greedy, as in lmms-eval)."""
    temperature = float(kwargs.get("temperature") or 0.0)
    do_sample = bool(kwargs.get("do_sample", False)) and temperature > 0
    return GenerationSettings(max_new_tokens=int(kwargs.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
                              do_sample=do_sample, temperature=temperature if do_sample else 1.0,
                              top_p=float(kwargs.get("top_p") or 1.0) if do_sample else 1.0)


PROTOCOL = "protocol"  # model_args value: take this setting from the task's protocol (the default)
NATIVE = ("none", "native")  # model_args edge values asking for the native size (no pre-resize)


def benchmark_for_task(task: str) -> str | None:
    """Our benchmark behind an lmms-eval task name (``videomme_w_subtitle`` -> ``videomme``, ``mvbench_action_count``
    -> ``mvbench``, ``longvideobench_val_v`` -> ``longvideobench``), or ``None`` when it is none of ours."""
    matches = [name for name in NAMES if task == name or task.startswith(name + "_")]
    return max(matches, key=len) if matches else None


def edge_arg(value: Any, name: str) -> int | None | str:
    """A ``shortest_edge`` / ``longest_edge`` model arg: an integer, ``native`` / ``none`` (keep the native size;
    lmms-eval may also hand over Python ``None``) or ``protocol`` (the task's own value)."""
    if value is None or str(value).strip().lower() in NATIVE:
        return None
    if str(value).strip().lower() == PROTOCOL:
        return PROTOCOL
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"vamba: model_args {name}={value!r} is not an integer, 'native' or 'protocol'") from None


@dataclasses.dataclass(frozen=True)
class FrameOverrides:
    """Frame settings asked for in ``--model_args``; what is not asked for comes from the task's benchmark module.

    Each of our benchmark modules holds its protocol's frames (LVBench 1,024 frames at 256/560, Video-MME 512 at
    256/480, HourVideo 128 at 256/360, NExT-QA 512 at native size, ...), so an lmms-eval run of a task gets the
    frames the VAMBA evaluation uses for it, not one task's numbers for every task.
    """

    num_frames: int | None = None
    shortest_edge: int | None | str = PROTOCOL
    longest_edge: int | None | str = PROTOCOL

    def for_task(self, task: str) -> FrameSettings:
        name = benchmark_for_task(task)
        if name is None:
            if self.num_frames is None:
                raise ValueError(f"vamba: lmms-eval task {task!r} is none of our benchmarks ({', '.join(NAMES)}), so "
                                 "its frames are unknown: give model_args num_frames=N (and shortest_edge / "
                                 "longest_edge, default 256 / 480)")
            base = FrameSettings(self.num_frames)
        else:
            benchmark = get_benchmark(name)
            protocol = "lmms_eval" if "lmms_eval" in benchmark.protocols else "vamba"
            base = benchmark.protocol(protocol).frames
        changes: dict[str, Any] = {}
        if self.num_frames is not None:
            changes["num_frames"] = self.num_frames
        for key in ("shortest_edge", "longest_edge"):
            if getattr(self, key) != PROTOCOL:
                changes[key] = getattr(self, key)
        return dataclasses.replace(base, **changes)


def _cut_at_stop(text: str, until: Sequence[str] | str | None) -> str:
    stops = [until] if isinstance(until, str) else list(until or [])
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return text if cut < 0 else text[:cut]


class LmmsEvalBridge:
    """lmms-eval's ``generate_until`` on top of a ``VideoQAModel``.

    Each request's ``args`` is ``(context, generation_kwargs, doc_to_visual, doc_id, task, split)``;
    ``doc_to_visual(task_dict[task][split][doc_id])`` gives a one-element list with the video path.
    """

    def __init__(self, model: VideoQAModel, frames: FrameSettings | FrameOverrides = FrameOverrides()) -> None:
        """``frames``: fixed settings for every task, or overrides of each task's protocol (``FrameOverrides``)."""
        self.model = model
        self.frames = frames

    def frames_for(self, task: str) -> FrameSettings:
        return self.frames if isinstance(self.frames, FrameSettings) else self.frames.for_task(task)

    def generate_until(self, requests: Sequence[Any], task_dict: Mapping[str, Any]) -> list[str]:
        by_video: dict[tuple[str, FrameSettings], list[int]] = {}
        for i, request in enumerate(requests):
            _, _, doc_to_visual, doc_id, task, split = request.args
            visuals = doc_to_visual(task_dict[task][split][doc_id])
            if len(visuals) != 1 or not isinstance(visuals[0], str):
                raise ValueError(f"VAMBA answers about one video per question; {task} doc {doc_id} gave {visuals!r}")
            by_video.setdefault((visuals[0], self.frames_for(task)), []).append(i)
        replies: list[str] = [""] * len(requests)
        for (path, frames), indices in by_video.items():
            encoded = self.model.encode_video(VideoRequest(path=path, frames=frames))
            for i in indices:
                context, kwargs = requests[i].args[:2]
                reply = self.model.answer(encoded, context, generation_from_kwargs(kwargs))
                replies[i] = _cut_at_stop(reply, kwargs.get("until"))
        return replies


@functools.cache
def _lmms_class() -> type:
    from lmms_eval.api.model import lmms

    class VambaLmms(lmms):
        """``--model vamba --model_args pretrained=<ckpt>[,num_frames=N,shortest_edge=E|native,longest_edge=E|native,
        device=auto,dtype=bfloat16,adapter=<module:function>]``; ``replay=<responses.jsonl>`` answers from
        recorded replies instead (our responses scored by lmms-eval's own task code). Frame settings not given
        come from each task's protocol in our benchmark modules (``FrameOverrides``)."""

        is_simple = True

        def __init__(self, pretrained: str | None = None, replay: str | None = None, num_frames: int | None = None,
                     shortest_edge: Any = PROTOCOL, longest_edge: Any = PROTOCOL, device: str = "auto",
                     dtype: str = "bfloat16", adapter: str | None = None, **unused: Any) -> None:
            super().__init__()
            from vamba.evaluation.cli import DEFAULT_ADAPTER, EvalModelConfig, load_model
            from vamba.evaluation.replay import ReplayModel

            if replay:
                model: VideoQAModel = ReplayModel.from_file(replay)
            elif pretrained:
                model = load_model(EvalModelConfig(path=str(pretrained), adapter=adapter or DEFAULT_ADAPTER,
                                                   device=device, dtype=dtype))
            else:
                raise ValueError("vamba: give model_args pretrained=<checkpoint> (or replay=<responses.jsonl>)")
            frames = FrameOverrides(None if num_frames is None else int(num_frames),
                                    edge_arg(shortest_edge, "shortest_edge"), edge_arg(longest_edge, "longest_edge"))
            self.bridge = LmmsEvalBridge(model, frames)
            self._rank, self._world_size = dist_env()

        def generate_until(self, requests: list) -> list[str]:
            return self.bridge.generate_until(requests, self.task_dict)

        def loglikelihood(self, requests: list) -> list:
            raise NotImplementedError("the VAMBA lmms-eval adapter supports generation tasks only")

        def generate_until_multi_round(self, requests: list) -> list[str]:
            raise NotImplementedError("the VAMBA lmms-eval adapter supports single-round generation only")

    VambaLmms.__module__ = __name__
    VambaLmms.__qualname__ = "VambaLmms"
    return VambaLmms


def __getattr__(name: str) -> Any:
    # PEP 562: ``VambaLmms`` is built on first access, so importing this module never needs lmms-eval.
    if name == "VambaLmms":
        return _lmms_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
