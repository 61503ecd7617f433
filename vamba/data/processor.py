"""``VambaProcessor``: transformers' processor interface for VAMBA (tokenizer + images + videos + chat template).

    import vamba.models                                    # registers VambaProcessor with AutoProcessor
    processor = AutoProcessor.from_pretrained(ckpt)        # -> VambaProcessor
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video", "path": "movie.mp4"},
                                      {"type": "text", "text": "What happens at the end?"}]}],
        add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt", num_frames=64)
    reply = model.generate(**inputs, max_new_tokens=64)

Outputs (docs/model.md, "The processor"): ``input_ids``, ``attention_mask``; for images ``pixel_values``
``[P, 1176]`` + ``image_grid_thw`` ``[n_images, 3]``, for videos ``pixel_values_videos`` + ``video_grid_thw``
(Qwen2-VL's flattened patch layout, items in order of appearance over the whole batch); ``mm_token_type_ids``
``[B, N]``: 0 everywhere except 1 (image) / 2 (video) on each item's ``<|vision_start|>`` token.

VAMBA prompts hold no pad tokens: each item is one ``<|vision_start|><|vision_end|>`` pair where it sits, and
its frames reach the model through the video stream. Text given to the processor marks an item either as
Qwen2-VL does, ``<|vision_start|><|image_pad|><|vision_end|>`` / ``...<|video_pad|>...`` (the chat template
writes this; the pad only says which kind of item sits there and is removed), or as a bare
``<|vision_start|><|vision_end|>`` when all items of the call are of one kind. A count of marks that differs
from the images or videos given is an error: nothing is dropped.

Sub-processors: Qwen2-VL's image processor (the PIL variant: no torchvision needed) and ``VambaVideoProcessor``
(``vamba.data.video_processor``), which decodes with ``vamba.data.video`` (decord, PyAV fallback), samples frames
as ``vamba.data.sampling`` and resizes as ``vamba.data.vision`` (VAMBA's edge rule, then smart resize). Their
settings (``min_pixels``, ``max_pixels``, frame count, fps, edges) are read from a checkpoint's own files
(``vamba.data.video_processor.read_processor_dicts``).
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin
from transformers.processing_utils import TextKwargs

from vamba.data.chat import DEFAULT_SYSTEM_PROMPT, VISION_MARKER
from vamba.data.sampling import FrameSampling
from vamba.data.video_processor import (
    VambaVideoProcessor,
    check_layout,
    flatten_videos,
    pixel_limits,
    read_processor_dicts,
)
from vamba.data.vision import VisionConfig

try:  # transformers >= 5.x names the PIL image processor so (needs no torchvision)
    from transformers import Qwen2VLImageProcessorPil as _ImageProcessor
except ImportError:  # pragma: no cover - older transformers
    from transformers import Qwen2VLImageProcessor as _ImageProcessor

VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
IMAGE_TYPE, VIDEO_TYPE = 1, 2  # mm_token_type_ids values (transformers' convention: 1 image, 2 video)
# One mark per visual item: the pad (Qwen2-VL's placeholder) is optional and only names the kind.
_MARK = re.compile(re.escape(VISION_START) + r"(" + re.escape(IMAGE_PAD) + "|" + re.escape(VIDEO_PAD) + r")?"
                   + re.escape(VISION_END))

# The Qwen2 chat template of docs/data.md with media items as their mark (one line: transformers renders with
# trim_blocks, which would eat a newline written right after a block tag).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'text' %}{{ item['text'] }}"
    "{% elif item['type'] == 'image' %}" + VISION_START + IMAGE_PAD + VISION_END +
    "{% elif item['type'] == 'video' %}" + VISION_START + VIDEO_PAD + VISION_END +
    "{% else %}{{ raise_exception('VAMBA chat template: unsupported content type ' + item['type']|string) }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

def flatten_images(images: Any) -> list[Any]:
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        return [i for item in images for i in flatten_images(item)]
    return [images]


def _rgb_image(image: Any) -> Any:
    """A PIL image / array, or a path, URL or base64 string -> an RGB image; a failure names the source."""
    if isinstance(image, os.PathLike):
        image = os.fspath(image)
    if isinstance(image, str):
        from transformers.image_utils import load_image as transformers_load_image

        try:
            return transformers_load_image(image).convert("RGB")
        except Exception as e:  # missing file, bad URL, undecodable bytes
            shown = image if len(image) < 200 else image[:60] + "..."
            raise ValueError(f"cannot load image {shown!r}: {e}") from e
    if hasattr(image, "convert"):
        return image.convert("RGB")
    if isinstance(image, (np.ndarray, torch.Tensor)):
        return image
    raise TypeError(f"cannot read an image from a {type(image).__name__}")


# -- the processor ------------------------------------------------------------------------------------------------
_VIDEO_KWARGS = {"num_frames", "fps", "do_sample_frames", "shortest_edge", "longest_edge", "odd_frames"}
_PIXEL_KWARGS = {"min_pixels", "max_pixels"}  # both images and videos
# transformers' bookkeeping that has no effect here (offsets are returned in the given text's characters).
# from_pretrained: where files come from (passed on), and what AutoProcessor adds (no effect: no remote code here).
_HUB_KWARGS = {"cache_dir", "force_download", "local_files_only", "revision", "token", "subfolder", "proxies"}
_AUTO_KWARGS = {"trust_remote_code", "_from_auto", "code_revision", "return_unused_kwargs", "use_fast"}
_IGNORED_KWARGS = {"return_text_replacement_offsets", "sanitize_control_tokens", "return_metadata", "device"}


class VambaProcessor(ProcessorMixin):
    """Tokenizer + Qwen2-VL image processor + ``VambaVideoProcessor`` + the VAMBA chat template (module doc).

    ``processor(text=..., images=..., videos=...)`` and ``processor.apply_chat_template(...)`` (transformers'
    content items ``{"type": "image"|"video", "path"|"url"|"image"|"video": ...}``; ``num_frames`` / ``fps``
    pick frames) give the model's inputs. Save and load with ``save_pretrained`` / ``from_pretrained`` (or
    ``AutoProcessor`` after ``import vamba.models``).
    """

    def __init__(self, image_processor=None, tokenizer=None, video_processor=None, chat_template=None) -> None:
        if tokenizer is None:
            raise ValueError("VambaProcessor needs a tokenizer")
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (VISION_START, VISION_END)}
        missing = [t for t, i in ids.items() if i is None or i == tokenizer.unk_token_id]
        if missing:
            raise ValueError(f"the tokenizer lacks the vision tokens {missing}: not a Qwen2-VL / VAMBA tokenizer")
        self.vision_start_token_id = ids[VISION_START]
        super().__init__(image_processor if image_processor is not None else _ImageProcessor(), tokenizer,
                         video_processor if video_processor is not None else VambaVideoProcessor(),
                         chat_template=chat_template or CHAT_TEMPLATE)

    def check_argument_for_proper_class(self, argument_name, argument):
        # NOTE: without torchvision, transformers' base class for video processors is a dummy object, so its own
        # check refuses every video processor; ours needs no torchvision.
        if argument_name == "video_processor":
            if not isinstance(argument, VambaVideoProcessor):
                raise TypeError(f"video_processor must be a VambaVideoProcessor, got {type(argument).__name__}")
            return VambaVideoProcessor
        return super().check_argument_for_proper_class(argument_name, argument)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> "VambaProcessor":
        """The processor of a checkpoint: its tokenizer, its chat template (if it has one; else VAMBA's), and image /
        video settings from its processor files (``read_processor_dicts``), so a Qwen2-VL or released VAMBA
        checkpoint gets its own ``min_pixels`` / ``max_pixels``. Keyword arguments of
        ``VambaVideoProcessor.SETTINGS`` override; hub arguments (``cache_dir``, ``revision``, ``token``, ...) are
        passed on; anything else is an error.

        NOTE: this owns the loading instead of the base class's, whose sub-processor resolution is private and
        changes between releases (5.25 resolves videos through ``AutoVideoProcessor``, which maps a checkpoint
        without our video-processor file to transformers' torchvision processor); the public entry points
        (``AutoProcessor.from_pretrained`` -> this method, ``save_pretrained``) are stable."""
        from transformers import AutoTokenizer

        hub = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
        hub = {k: v for k, v in hub.items() if v is not None}
        overrides = {k: kwargs.pop(k) for k in VambaVideoProcessor.SETTINGS if k in kwargs}
        for key in _AUTO_KWARGS:
            kwargs.pop(key, None)
        if kwargs:
            raise TypeError(f"VambaProcessor.from_pretrained: unexpected argument(s) {sorted(kwargs)}; settings: "
                            f"{list(VambaVideoProcessor.SETTINGS)}, hub: {sorted(_HUB_KWARGS)}")
        path = pretrained_model_name_or_path
        tokenizer = AutoTokenizer.from_pretrained(path, **hub)
        video_dict, image_dict, source = read_processor_dicts(path, **hub)
        video = VambaVideoProcessor.from_pretrained(path, **hub, **overrides)
        limits = {k: v for k, v in overrides.items() if k in ("min_pixels", "max_pixels")}
        if image_dict is None:
            image = _ImageProcessor(min_pixels=video.min_pixels, max_pixels=video.max_pixels)
        else:
            check_layout(image_dict, source)  # the rest is fixed by the vision tower: only the limits vary
            image = _ImageProcessor(**pixel_limits(image_dict))
        if limits:
            image = _ImageProcessor(**{**_image_limits(image), **limits})
        processor_dict, _ = cls.get_processor_dict(path, **hub)  # holds the checkpoint's chat template, if any
        return cls(image, tokenizer, video, chat_template=processor_dict.get("chat_template"))

    # -- processing ---------------------------------------------------------------------------------------------
    def __call__(self, images: Any = None, text: str | list[str] | None = None, videos: Any = None,
                 audio: Any = None, **kwargs: Any) -> BatchFeature:
        """``text`` (one string or a batch) with one mark per item (module doc); ``images`` / ``videos`` in order of
        appearance (flat or one list per sample). Keyword arguments: ``num_frames``, ``fps``, ``do_sample_frames``,
        ``shortest_edge`` / ``longest_edge``, ``odd_frames`` (videos), ``min_pixels`` / ``max_pixels`` (images and
        videos), ``images_kwargs`` / ``videos_kwargs`` / ``text_kwargs`` (transformers' nested form),
        ``return_tensors``, ``return_mm_token_type_ids`` (default True), transformers' text keywords (padding,
        truncation, ...) for the tokenizer; anything else is an error."""
        if audio is not None:
            raise ValueError("VAMBA takes no audio")
        if text is None:
            raise ValueError("VambaProcessor needs the text (with one <|vision_start|><|vision_end|> per item)")
        texts = [text] if isinstance(text, str) else list(text)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("text must be a string or a list of strings")
        return_tensors = kwargs.pop("return_tensors", None)
        with_types = kwargs.pop("return_mm_token_type_ids", True)
        pixels = {k: kwargs.pop(k) for k in _PIXEL_KWARGS if k in kwargs}
        video_kwargs = {**kwargs.pop("videos_kwargs", {}), **pixels,
                        **{k: kwargs.pop(k) for k in _VIDEO_KWARGS if k in kwargs}}
        image_kwargs = kwargs.pop("images_kwargs", {})
        if pixels:
            limits = {**_image_limits(self.image_processor), **pixels}
            image_kwargs = {"size": {"shortest_edge": limits["min_pixels"], "longest_edge": limits["max_pixels"]},
                            **image_kwargs}
        text_kwargs = {**kwargs.pop("text_kwargs", {}), **kwargs}
        for key in (*_IGNORED_KWARGS, "return_tensors", "return_mm_token_type_ids"):
            text_kwargs.pop(key, None)
        unknown = sorted(set(text_kwargs) - set(TextKwargs.__annotations__))
        if unknown:
            raise TypeError(f"VambaProcessor: unexpected argument(s) {unknown}; videos take {sorted(_VIDEO_KWARGS)}, "
                            f"images and videos {sorted(_PIXEL_KWARGS)}, the tokenizer transformers' text kwargs")

        image_list = [_rgb_image(i) for i in flatten_images(images)]
        video_list = flatten_videos(videos)
        texts, rows, removed = self._place_items(texts, len(image_list), len(video_list))

        data: dict[str, Any] = {}
        if image_list:
            out = self.image_processor(images=image_list, **image_kwargs)
            data["pixel_values"] = np.asarray(out["pixel_values"], dtype=np.float32)
            data["image_grid_thw"] = np.asarray(out["image_grid_thw"], dtype=np.int64)
        if video_list:
            data.update(self.video_processor(video_list, **video_kwargs))

        encoded = self.tokenizer(texts, **text_kwargs)
        input_ids = [list(map(int, row)) for row in encoded["input_ids"]]
        types = []
        for b, (ids, kinds) in enumerate(zip(input_ids, rows)):
            starts = [i for i, t in enumerate(ids) if t == self.vision_start_token_id]
            if len(starts) != len(kinds):
                raise ValueError(f"sample {b}: {len(starts)} <|vision_start|> tokens after tokenisation for "
                                 f"{len(kinds)} visual items (truncated, or a stray <|vision_start|> in the text)")
            row = [0] * len(ids)
            for i, kind in zip(starts, kinds):
                row[i] = kind
            types.append(row)
        if "offset_mapping" in encoded:  # back to the given text's characters (return_assistant_tokens_mask)
            encoded["offset_mapping"] = [_unshift(offsets, cuts) for offsets, cuts in
                                         zip(encoded["offset_mapping"], removed)]
        data = {**encoded, **data}
        if with_types:
            data["mm_token_type_ids"] = types
        return BatchFeature(data, tensor_type=return_tensors)

    def _place_items(self, texts: list[str], n_images: int, n_videos: int
                     ) -> tuple[list[str], list[list[int]], list[list[tuple[int, int]]]]:
        """Texts with the pads removed, the item kind of each mark per sample, and the removed spans
        ``(position in the new text, length)`` per sample. Counts that do not match the items are errors."""
        found = {IMAGE_TYPE: 0, VIDEO_TYPE: 0, None: 0}
        kinds_per_text, out, removed = [], [], []
        for text in texts:
            pieces, kinds, cuts, last, shift = [], [], [], 0, 0
            for m in _MARK.finditer(text):
                pad = m.group(1)
                kind = IMAGE_TYPE if pad == IMAGE_PAD else VIDEO_TYPE if pad == VIDEO_PAD else None
                found[kind] += 1
                kinds.append(kind)
                if pad:
                    pieces.append(text[last:m.start(1)])
                    cuts.append((m.start(1) - shift, len(pad)))
                    shift += len(pad)
                    last = m.end(1)
            pieces.append(text[last:])
            new = "".join(pieces)
            for pad in (IMAGE_PAD, VIDEO_PAD):
                if pad in new:
                    raise ValueError(f"{pad} outside {VISION_MARKER}: VAMBA prompts mark each item as "
                                     f"{VISION_START}{pad}{VISION_END} (or {VISION_MARKER})")
            out.append(new)
            kinds_per_text.append(kinds)
            removed.append(cuts)
        bare = found[None]
        if bare and n_images and n_videos:
            raise ValueError(f"{bare} bare {VISION_MARKER} mark(s) with both images and videos given: write "
                             f"{VISION_START}{IMAGE_PAD}{VISION_END} or ...{VIDEO_PAD}... to say which item sits where")
        if bare and not (n_images or n_videos):
            raise ValueError(f"the text marks {bare} visual item(s) with {VISION_MARKER} but no image or video was "
                             "given")
        fill = IMAGE_TYPE if n_images else VIDEO_TYPE
        kinds_per_text = [[fill if k is None else k for k in kinds] for kinds in kinds_per_text]
        counts = {kind: sum(k == kind for ks in kinds_per_text for k in ks) for kind in (IMAGE_TYPE, VIDEO_TYPE)}
        for kind, given, name in ((IMAGE_TYPE, n_images, "image"), (VIDEO_TYPE, n_videos, "video")):
            if counts[kind] != given:
                raise ValueError(f"the text marks {counts[kind]} {name}(s) but {given} {name}(s) were given: every "
                                 f"{name} needs one {VISION_START}...{VISION_END} mark where it sits (a media item "
                                 f"the chat template cannot place, or one without a path/url, is an error)")
        return out, kinds_per_text, removed

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "image_grid_thw", "pixel_values_videos",
                "video_grid_thw", "mm_token_type_ids"]

    # -- VAMBA settings -----------------------------------------------------------------------------------------
    def vision_config(self, **overrides: Any) -> VisionConfig:
        return self.video_processor.vision_config(**overrides)

    def frame_sampling(self, num_frames: int | None = None, fps: float | None = None) -> FrameSampling:
        return self.video_processor.frame_sampling(num_frames, fps)


def _image_limits(image_processor: Any) -> dict[str, int]:
    size = image_processor.size
    get = size.get if isinstance(size, dict) else lambda k, d=None: getattr(size, k, d)
    return {"min_pixels": get("shortest_edge"), "max_pixels": get("longest_edge")}


def _unshift(offsets: Sequence[Sequence[int]], cuts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Token character offsets in the text without pads -> offsets in the text as given (pads in place)."""
    if not cuts:
        return [tuple(o) for o in offsets]

    def back(pos: int, inclusive: bool) -> int:
        return pos + sum(length for at, length in cuts if (at <= pos if inclusive else at < pos))

    return [(back(int(s), True), back(int(e), False)) if e > s else (int(s), int(e)) for s, e in offsets]


def build_processor(tokenizer: Any, vision: VisionConfig | None = None, sampling: FrameSampling | None = None
                    ) -> VambaProcessor:
    """A processor for a tokenizer and VAMBA's settings (training saves the ones it used beside checkpoints)."""
    vision = vision or VisionConfig()
    video = VambaVideoProcessor(
        num_frames=sampling.num_frames if sampling else 128, fps=sampling.fps if sampling and sampling.mode == "fps"
        else None, shortest_edge=vision.shortest_edge, longest_edge=vision.longest_edge,
        min_pixels=vision.min_pixels, max_pixels=vision.max_pixels, odd_frames=vision.odd_frames)
    image = _ImageProcessor(min_pixels=vision.min_pixels, max_pixels=vision.max_pixels)
    return VambaProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video)


def load_vision_config(path: str | os.PathLike, **overrides: Any) -> VisionConfig:
    """A checkpoint's ``VisionConfig`` from its processor files (defaults, with a warning, when it has none);
    ``overrides`` whose value is not None replace fields (explicit CLI / config values win)."""
    video = VambaVideoProcessor.from_pretrained(path)
    return video.vision_config(**{k: v for k, v in overrides.items() if v is not None})


__all__ = ["CHAT_TEMPLATE", "VambaProcessor", "build_processor", "load_vision_config"]
