"""``VambaVideoProcessor`` (videos -> Qwen2-VL patches with VAMBA's sampling and resize) and the reading of a
checkpoint's processor files, for ``VambaProcessor`` (``vamba.data.processor``; docs/model.md, "The processor")."""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from transformers.video_processing_utils import BaseVideoProcessor

from vamba.data.sampling import FrameSampling, uniform_indices
from vamba.data.video import VideoReadConfig, read_video
from vamba.data.vision import MERGE_SIZE, PATCH_SIZE, TEMPORAL_PATCH_SIZE, VisionConfig, process_frames
from vamba.utils.io import read_checkpoint_json

logger = logging.getLogger(__name__)

PROCESSOR_FILE = "processor_config.json"          # transformers 5.x: every sub-processor nested in one file
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"  # Qwen2-VL checkpoints and the released VAMBA checkpoint
VIDEO_PROCESSOR_FILE = "video_preprocessor_config.json"


def read_processor_dicts(path: str | os.PathLike, **hub_kwargs: Any) -> tuple[dict | None, dict | None, str | None]:
    """``(video_dict, image_dict, source)``: a checkpoint's video / image processor settings and the file they
    came from (None: the checkpoint has no processor file).

    Order, as transformers reads them: the nested dicts of ``processor_config.json``, then
    ``video_preprocessor_config.json`` (only one written for ``VambaVideoProcessor``: Qwen2-VL's own video
    processor uses other pixel limits than the released VAMBA, which processes videos with the image processor's
    settings), then ``preprocessor_config.json``.
    """
    path = os.fspath(path)
    nested = read_checkpoint_json(path, PROCESSOR_FILE, hub_kwargs) or {}
    video = nested.get("video_processor") if isinstance(nested.get("video_processor"), dict) else None
    image = nested.get("image_processor") if isinstance(nested.get("image_processor"), dict) else None
    source = os.path.join(path, PROCESSOR_FILE) if (video or image) else None
    if video is not None and video.get("video_processor_type") != VambaVideoProcessor.__name__:
        video = None
    if video is None:
        own = read_checkpoint_json(path, VIDEO_PROCESSOR_FILE, hub_kwargs)
        if own is not None and own.get("video_processor_type") == VambaVideoProcessor.__name__:
            video, source = own, os.path.join(path, VIDEO_PROCESSOR_FILE)
    if image is None:
        image = read_checkpoint_json(path, IMAGE_PROCESSOR_FILE, hub_kwargs)
        if image is not None and source is None:
            source = os.path.join(path, IMAGE_PROCESSOR_FILE)
    return video, image, source


def pixel_limits(settings: dict[str, Any]) -> dict[str, int]:
    """``min_pixels`` / ``max_pixels`` of a Qwen2-VL image-processor dict, in any of the forms checkpoints use:
    top-level keys (4.x and the released checkpoints), ``size: {shortest_edge, longest_edge}`` (5.x, where
    those names are pixel counts) or ``size: {min_pixels, max_pixels}``."""
    size = settings.get("size") if isinstance(settings.get("size"), dict) else {}
    out = {}
    for key, alias in (("min_pixels", "shortest_edge"), ("max_pixels", "longest_edge")):
        value = settings.get(key, size.get(key, size.get(alias)))
        if value is not None:
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
            out[key] = value
    return out


def check_layout(settings: dict[str, Any], source: str) -> None:
    """The patch geometry and normalisation are fixed by the vision tower: a checkpoint that says otherwise
    cannot be processed by ``vamba.data.vision``."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    fixed = {"patch_size": PATCH_SIZE, "temporal_patch_size": TEMPORAL_PATCH_SIZE, "merge_size": MERGE_SIZE}
    for key, want in fixed.items():
        if settings.get(key, want) != want:
            raise ValueError(f"{source}: {key}={settings[key]!r}, but the Qwen2-VL vision tower needs {want}")
    for key, want in (("image_mean", OPENAI_CLIP_MEAN), ("image_std", OPENAI_CLIP_STD)):
        got = settings.get(key)
        if got is not None and not np.allclose(np.asarray(got, dtype=np.float64), want, atol=1e-6):
            raise ValueError(f"{source}: {key}={got!r} differs from the CLIP statistics the vision tower uses")


# -- the video processor ------------------------------------------------------------------------------------------
class VambaVideoProcessor(BaseVideoProcessor):
    """Videos -> ``pixel_values_videos [P, 1176]`` + ``video_grid_thw [n, 3]`` with VAMBA's sampling and resize.

    num_frames: frames read uniformly (the released sampler: midpoints of equal segments), or the cap when
    ``fps`` is set; fps: read at this rate instead (None: uniform); shortest_edge / longest_edge: VAMBA's edge
    rule in pixels of a side (None: off); min_pixels / max_pixels: smart-resize limits; odd_frames: ``drop``
    (released VAMBA) or ``repeat``. Decoding is ``vamba.data.video.read_video`` (decord, PyAV fallback, timeout).

    Subclasses transformers' ``BaseVideoProcessor`` for its interface only: nothing of its torchvision path runs.
    """

    model_input_names = ["pixel_values_videos", "video_grid_thw"]
    SETTINGS = ("num_frames", "fps", "shortest_edge", "longest_edge", "min_pixels", "max_pixels", "odd_frames",
                "do_sample_frames")
    # Keys a saved dict may hold beside SETTINGS (transformers' bookkeeping and the fixed layout).
    _BOOKKEEPING = {"video_processor_type", "processor_class", "patch_size", "temporal_patch_size", "merge_size",
                    "image_mean", "image_std", "_processor_class"}

    def __init__(self, num_frames: int = 128, fps: float | None = None, shortest_edge: int | None = None,
                 longest_edge: int | None = None, min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280,
                 odd_frames: str = "drop", do_sample_frames: bool = True, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - self._BOOKKEEPING)
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown setting(s) {unknown}; known: {list(self.SETTINGS)}")
        check_layout(kwargs, type(self).__name__)
        super().__init__()
        # FrameSampling / VisionConfig validate the values (positive counts, odd_frames) here, not at first use.
        FrameSampling("fps" if fps else "uniform", num_frames, fps or 1.0)
        VisionConfig(shortest_edge, longest_edge, min_pixels, max_pixels, odd_frames)
        self.num_frames, self.fps = int(num_frames), (float(fps) if fps else None)
        self.shortest_edge, self.longest_edge = shortest_edge, longest_edge
        self.min_pixels, self.max_pixels = int(min_pixels), int(max_pixels)
        self.odd_frames, self.do_sample_frames = odd_frames, bool(do_sample_frames)
        self.patch_size, self.temporal_patch_size, self.merge_size = PATCH_SIZE, TEMPORAL_PATCH_SIZE, MERGE_SIZE

    # -- settings <-> VAMBA configs and files -------------------------------------------------------------------
    def vision_config(self, **overrides: Any) -> VisionConfig:
        """The resize settings as ``vamba.data.vision.VisionConfig`` (``overrides``: fields to replace)."""
        config = VisionConfig(self.shortest_edge, self.longest_edge, self.min_pixels, self.max_pixels,
                              self.odd_frames)
        return replace(config, **overrides) if overrides else config

    def frame_sampling(self, num_frames: int | None = None, fps: float | None = None) -> FrameSampling:
        """Uniform ``num_frames``, or ``fps`` with ``num_frames`` as the cap (defaults: this processor's)."""
        num_frames = self.num_frames if num_frames is None else int(num_frames)
        fps = self.fps if fps is None else fps
        return FrameSampling("fps", num_frames, fps=float(fps)) if fps else FrameSampling("uniform", num_frames)

    def to_dict(self) -> dict[str, Any]:
        out = {key: getattr(self, key) for key in self.SETTINGS}
        out.update(patch_size=PATCH_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE, merge_size=MERGE_SIZE,
                   video_processor_type=type(self).__name__)
        return out

    @classmethod
    def from_dict(cls, video_processor_dict: dict[str, Any], **kwargs: Any):
        settings = {**video_processor_dict, **{k: v for k, v in kwargs.items() if k in cls.SETTINGS}}
        processor = cls(**settings)
        rest = {k: v for k, v in kwargs.items() if k not in cls.SETTINGS}
        return (processor, rest) if rest.pop("return_unused_kwargs", False) else processor

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any):
        """Settings of a checkpoint (``read_processor_dicts``): our own video-processor dict, else the pixel
        limits of its Qwen2-VL image processor (what the released VAMBA used for videos), else the defaults
        (with a warning). ``kwargs`` of ``SETTINGS`` override."""
        hub = {k: kwargs.pop(k) for k in ("cache_dir", "force_download", "local_files_only", "revision", "token",
                                          "subfolder") if k in kwargs}
        hub = {k: v for k, v in hub.items() if v is not None}
        video, image, source = read_processor_dicts(pretrained_model_name_or_path, **hub)
        if video is not None:
            settings = dict(video)
        elif image is not None:
            check_layout(image, source)
            settings = pixel_limits(image)
        else:
            logger.warning("%s has no processor file (%s / %s / %s): video settings are the defaults %s",
                           pretrained_model_name_or_path, PROCESSOR_FILE, VIDEO_PROCESSOR_FILE, IMAGE_PROCESSOR_FILE,
                           cls().to_dict())
            settings = {}
        try:
            return cls.from_dict(settings, **kwargs)
        except ValueError as e:
            raise ValueError(f"{source or pretrained_model_name_or_path}: {e}") from e

    # -- processing ---------------------------------------------------------------------------------------------
    def __call__(self, videos: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(videos, **kwargs)

    def preprocess(self, videos: Any, num_frames: int | None = None, fps: float | None = None,
                   do_sample_frames: bool | None = None, return_tensors: Any = None,
                   **kwargs: Any) -> BatchFeature:
        """``videos``: a file path, ``uint8 [T, H, W, 3]`` frames (numpy or torch), a list of frames, or a (nested,
        per-sample) list of those. Frames given as arrays are subsampled uniformly to ``num_frames``;
        ``do_sample_frames=False`` keeps every frame (of a file: reads all of it)."""
        vision = self.vision_config(**{k: kwargs.pop(k) for k in ("min_pixels", "max_pixels", "shortest_edge",
                                                                   "longest_edge", "odd_frames") if k in kwargs})
        kwargs.pop("device", None)  # transformers' own video processors accept a device; decoding here is on CPU
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected argument(s) {sorted(kwargs)}")
        sample = self.do_sample_frames if do_sample_frames is None else do_sample_frames
        sampling = self.frame_sampling(num_frames, fps)
        pixels, grids = [], []
        for video in flatten_videos(videos):
            frames = self.read_frames(video, sampling if sample else None)
            pixel_values, grid = process_frames(frames, vision)
            pixels.append(pixel_values.numpy())
            grids.append(grid.numpy())
        if not pixels:
            raise ValueError("no video given")
        return BatchFeature({"pixel_values_videos": np.concatenate(pixels), "video_grid_thw": np.concatenate(grids)},
                            tensor_type=return_tensors)

    @staticmethod
    def read_frames(video: Any, sampling: FrameSampling | None) -> np.ndarray:
        """``uint8 [T, H, W, 3]`` frames of one video (a path or frames), sampled by ``sampling`` (None: all)."""
        if isinstance(video, (str, os.PathLike)):
            if sampling is None:  # every frame: a uniform "sample" as long as the video
                sampling = FrameSampling("uniform", 1 << 62)
            return read_video(video, sampling, VideoReadConfig()).frames
        frames = _frames_array(video)
        if sampling is not None and sampling.mode == "fps":
            raise ValueError("fps sampling needs a video file (frames given as arrays carry no frame rate); "
                             "pass num_frames instead")
        if sampling is not None:
            frames = frames[uniform_indices(len(frames), sampling.num_frames)]
        return frames


def _frames_array(video: Any) -> np.ndarray:
    if isinstance(video, torch.Tensor):
        video = video.numpy()
    if isinstance(video, (list, tuple)):
        video = np.stack([np.asarray(frame.convert("RGB")) if hasattr(frame, "convert") else np.asarray(frame)
                          for frame in video])
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8 or not len(video):
        raise ValueError(f"a video given as frames must be uint8 [T, H, W, 3], got {video.dtype} {video.shape}")
    return video


def _is_frame(x: Any) -> bool:
    return hasattr(x, "convert") or (isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim == 3)


def flatten_videos(videos: Any) -> list[Any]:
    """Videos in order: a path or a frames array is one video; a list of frames (3-D arrays / PIL images) is one
    video; any other list is a list (of lists) of videos."""
    if videos is None:
        return []
    if isinstance(videos, (str, os.PathLike, np.ndarray, torch.Tensor)):
        return [videos]
    if isinstance(videos, (list, tuple)):
        if videos and all(_is_frame(v) for v in videos):
            return [list(videos)]
        return [v for item in videos for v in flatten_videos(item)]
    raise TypeError(f"cannot read a video from a {type(videos).__name__}")
