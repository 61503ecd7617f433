"""Ask a VAMBA model about a video: load once, encode a video once, ask any number of questions.

    chat = VambaChat.from_pretrained("path/to/checkpoint")          # model + tokenizer (+ device, dtype)
    video = chat.encode("movie.mp4", sampling=FrameSampling("fps", num_frames=3600, fps=1.0))
    print(chat.ask(video, "What happens at the end?"))
    conversation = chat.conversation(video)                           # keeps the turns
    conversation.ask("Who is in the first scene?"); conversation.ask("And what do they wear?")

Encoding streams the video through the model in pieces of frames (``vamba.inference.streaming``): peak
memory is the weights + the cross-attention K/V cache + one piece, so an hour of video at 1 fps fits
where a one-shot prefill would not. Every question then runs the text stream alone against the cached
K/V (paper Sec. 3): follow-up questions never re-encode the video.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vamba.data.chat import DEFAULT_SYSTEM_PROMPT, VISION_MARKER, Message, encode_chat
from vamba.data.sampling import FrameSampling
from vamba.data.video import VideoReader
from vamba.data.vision import VisionConfig, process_frames
from vamba.inference.streaming import VideoStream, split_patches
from vamba.inference.video import PieceStats, ReadyFrames, VideoPlan
from vamba.models.cache import VideoCache
from vamba.models.fast_decode import greedy_decode, unsupported
from vamba.utils.cli_args import auto_dtype
from vamba.utils.logging import get_logger

DECODE_LOOPS = ("auto", "static", "generate")  # VambaChat.reply's and reply_many's decode=
logger = get_logger(__name__)
RANDOM_CHECKPOINT = "random_checkpoint.json"  # written beside the weights by vamba.bench.checkpoint

DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
          "float32": torch.float32, "fp32": torch.float32}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``: this process's GPU (``LOCAL_RANK`` under torchrun, so data-parallel ranks spread out), else CPU."""
    if device in (None, "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[dtype]


@dataclass
class EncodedVideo:
    """A video as the model keeps it: per-layer cross-attention K/V (``cache``) and where it came from.

    grid: (t, h, w) patches; frames: frames read (after making the count even); timestamps: seconds of each;
    seconds: time the encoding took; host: where the host's decoding work went (``PieceStats``: decoding and
    resizing on the background threads, and the time the model waited for frames), for a file or folder.
    """

    cache: VideoCache
    source: str
    grid: tuple[int, int, int]
    frames: int
    timestamps: list[float] = field(default_factory=list)
    seconds: float = 0.0
    host: PieceStats | None = None

    @property
    def tokens(self) -> int:
        return self.cache.keys[0].shape[2]

    @property
    def timing(self) -> dict[str, float]:
        """Host seconds behind the encoding, recorded per video by the evaluation runner: ``wait_s`` (the model
        waited for frames), ``decode_s`` and ``resize_s`` (summed over the threads or decode workers that did them),
        ``decode_parts`` (the decode workers that shared the video; 1 in process)."""
        host = self.host
        return {} if host is None else {"wait_s": host.wait_s, "decode_s": host.decode_s, "resize_s": host.resize_s,
                                        "decode_parts": host.parts}


# One video's opening plus decoding in eval and chat: an hour-long video decodes in minutes, a hung decoder never.
DEFAULT_DECODE_TIMEOUT_S = 1800.0


class VambaChat:
    """A loaded model + tokenizer that encodes videos and answers questions about them.

    piece_frames: frames per piece of the streaming prefill (memory vs speed); workers: threads resizing decoded
    frames while the model encodes (one more decodes; ``VideoPlan.pieces``); vision: resize settings
    (default: Qwen2-VL's smart resize alone; ``from_pretrained``: the checkpoint's processor files); sampling: the
    frames ``encode`` reads by default (16 uniform; ``from_pretrained``: the checkpoint's); system_prompt: the
    chat's system turn. decode_timeout_s: seconds one video may spend opening and decoding (None: no limit);
    past it ``encode`` raises ``VideoDecodeError`` (decord hangs on some files) and the stuck decoder thread is
    abandoned, at most ``vamba.data.video.MAX_ABANDONED_DECODERS`` of them per process.
    """

    def __init__(self, model, tokenizer, vision: VisionConfig | None = None, piece_frames: int = 128,
                 system_prompt: str | None = DEFAULT_SYSTEM_PROMPT, sampling: FrameSampling | None = None,
                 workers: int = 4, decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.vision = vision or VisionConfig()
        self.sampling = sampling or FrameSampling()
        self.piece_frames = piece_frames
        self.workers = workers
        self.decode_timeout_s = decode_timeout_s
        self.system_prompt = system_prompt
        stops = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
        self.eos_token_ids = [i for i in stops if i is not None and i != tokenizer.unk_token_id]
        if not self.eos_token_ids:
            raise ValueError("the tokenizer has neither <|im_end|> nor <|endoftext|>: not a Qwen2 chat tokenizer")
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_ids[-1]

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device | None = "auto",
                        dtype: str | torch.dtype = "auto", fp8: str = "none", **kwargs: Any) -> VambaChat:
        """Load model, tokenizer and processor settings from one checkpoint directory (ours, or the released VAMBA
        layout). Resize settings (``min_pixels`` / ``max_pixels``, edges) and the default frames come from the
        checkpoint's processor files (``vamba.data.video_processor.read_processor_dicts``; defaults when it has none);
        ``vision=`` / ``sampling=`` given here win. ``fp8``: which layers run in FP8 (``VambaConfig.fp8``). ``dtype``
        ``auto``: bfloat16 on CUDA, float32 elsewhere (``vamba.utils.cli_args.auto_dtype``, every command's rule)."""
        from transformers import AutoTokenizer

        from vamba.data.video_processor import VambaVideoProcessor
        from vamba.models import VambaForConditionalGeneration

        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"checkpoint directory {path} does not exist")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"{path} has no usable tokenizer (tokenizer.json / tokenizer_config.json): {e}"
                                    ) from e
        if kwargs.get("vision") is None or kwargs.get("sampling") is None:
            settings = VambaVideoProcessor.from_pretrained(path)
            if kwargs.get("vision") is None:
                kwargs["vision"] = settings.vision_config()
            if kwargs.get("sampling") is None:
                kwargs["sampling"] = settings.frame_sampling()
        if os.path.isfile(os.path.join(path, RANDOM_CHECKPOINT)):  # scripts/random_checkpoint.py: for speed only
            logger.warning("%s holds random weights (%s): its answers measure speed, not accuracy", path,
                           RANDOM_CHECKPOINT)
        target = resolve_device(device)
        if isinstance(dtype, str):
            dtype = auto_dtype(dtype, str(target))
        model = VambaForConditionalGeneration.from_pretrained(path, dtype=resolve_dtype(dtype), fp8=fp8)
        return cls(model.to(target), tokenizer, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    # -- encoding -------------------------------------------------------------------------------------
    def encode(self, video: str | os.PathLike, sampling: FrameSampling | None = None,
               indices: Sequence[int] | None = None, reader: VideoReader | None = None,
               vision: VisionConfig | None = None,
               progress: bool | Callable[[int, int], None] = False, ready: ReadyFrames | None = None,
               spent_s: float = 0.0) -> EncodedVideo:
        """Decode, vision-encode and stream a video file (or frame folder) through the model, piece by piece.

        ``sampling`` (default: the chat's ``sampling``) or explicit source frame ``indices`` pick the frames;
        ``vision`` overrides the chat's resize settings for this video. ``progress``: True for a tqdm bar, or a
        callback ``(frames_done, frames_total)``. ``ready``: the frames decoded and resized ahead
        (``vamba.inference.prefetch``), encoded as they are (the other reading arguments are then unused).
        ``spent_s``: seconds of the video's ``decode_timeout_s`` the caller spent opening ``reader``.
        """
        started = time.perf_counter()
        plan = ready or VideoPlan.create(video, indices=indices, sampling=sampling or self.sampling,
                                         vision=vision or self.vision, reader=reader, timeout_s=self.decode_timeout_s,
                                         spent_s=spent_s)
        stream = VideoStream(self.model, plan.grid)
        with _progress(progress, 2 * plan.grid[0], f"encoding {os.path.basename(os.fspath(video))}") as update:
            # The patches are made on the model's device, in its vision dtype (uint8 frames cross to a GPU).
            for pixel_values, grid_thw in plan.pieces(self.piece_frames, workers=self.workers, device=self.device,
                                                      dtype=self.model.visual.dtype):
                stream.push(pixel_values, grid_thw)
                update(2 * int(grid_thw[0, 0]))
        return EncodedVideo(stream.finish(), plan.source, plan.grid, len(plan.indices), plan.timestamps,
                            time.perf_counter() - started, plan.stats)

    def encode_frames(self, frames: np.ndarray, source: str = "<frames>") -> EncodedVideo:
        """Encode frames already in memory: uint8 [T, H, W, 3] (T = 1: an image)."""
        started = time.perf_counter()
        pixel_values, grid_thw = process_frames(frames, self.vision)
        grid = tuple(int(x) for x in grid_thw[0].tolist())
        stream = VideoStream(self.model, grid)
        for piece in split_patches(pixel_values, grid_thw, max(1, self.piece_frames // 2)):
            stream.push(*piece)
        return EncodedVideo(stream.finish(), source, grid, 2 * grid[0], [], time.perf_counter() - started)

    # -- asking ---------------------------------------------------------------------------------------
    def prompt_ids(self, turns: Sequence[tuple[str, str | None]]) -> list[int]:
        """Token ids of a chat about one video: ``turns`` = (question, answer or None for the last one).

        The video marker goes before the first question (as the released model was trained)."""
        messages = []
        for i, (question, answer) in enumerate(turns):
            messages.append(Message("user", (VISION_MARKER if i == 0 else "") + question))
            if answer is not None:
                messages.append(Message("assistant", answer))
        return encode_chat(messages, self.tokenizer, self.system_prompt, add_generation_prompt=True,
                           require_target=False).input_ids

    def ask(self, video: EncodedVideo, question: str, history: Sequence[tuple[str, str]] = (),
            max_new_tokens: int = 512, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
            seed: int | None = None, streamer: Any = None) -> str:
        """Answer ``question`` about an encoded video (after the earlier ``history`` turns); returns the reply
        without special tokens and without surrounding whitespace. ``streamer``: a transformers streamer (e.g.
        ``TextStreamer``) that gets each new token as it is generated. ``seed`` makes sampled decoding
        reproducible."""
        return self.reply(video, question, history, max_new_tokens=max_new_tokens, do_sample=do_sample,
                          temperature=temperature, top_p=top_p, seed=seed, streamer=streamer).strip()

    @torch.no_grad()
    def reply(self, video: EncodedVideo, question: str, history: Sequence[tuple[str, str]] = (), *,
              max_new_tokens: int = 512, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
              top_k: int | None = None, seed: int | None = None, eos_token_ids: Sequence[int] | None = None,
              streamer: Any = None, decode: str = "auto") -> str:
        """The reply exactly as generated: decoded without special tokens, nothing stripped or cleaned up.

        Every decoding setting is passed to ``generate`` explicitly, so a checkpoint's ``generation_config``
        cannot change them: ``top_k=None`` means no top-k filter (not the checkpoint's, nor transformers'
        default of 50), greedy decoding clears temperature/top-p/top-k. ``eos_token_ids``: the tokens that end
        the reply (default: ``self.eos_token_ids``, ``<|im_end|>`` and ``<|endoftext|>``).
        ``decode``: the loop of greedy decoding (``DECODE_LOOPS``): ``static`` = ``vamba.models.fast_decode`` (a
        static text cache, the step replayed in a CUDA graph on CUDA; ``generate``'s tokens in float32, in bf16
        within its rounding: a near tie can flip, seen on an H100, docs/inference.md),
        ``generate`` = transformers' ``generate``, ``auto`` = ``static`` on CUDA, ``generate`` elsewhere. Sampling
        always decodes through ``generate``.
        """
        if decode not in DECODE_LOOPS:
            raise ValueError(f"decode must be one of {DECODE_LOOPS}, got {decode!r}")
        ids = torch.tensor([self.prompt_ids([*history, (question, None)])], device=self.device)
        options: dict[str, Any] = {"do_sample": do_sample}
        if do_sample:
            options.update(temperature=temperature, top_p=top_p, top_k=top_k)
        else:
            options.update(temperature=None, top_p=None, top_k=None)
        cache = video.cache if video.cache.keys[0].device == self.device else video.cache.to(self.device)
        stops = list(self.eos_token_ids if eos_token_ids is None else eos_token_ids)
        if _static_decoding(self.model, decode, do_sample):
            out = greedy_decode(self.model, ids, cache, max_new_tokens, stops, self.pad_token_id, streamer=streamer)
            return self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True,
                                         clean_up_tokenization_spaces=False)
        rng = torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])
        with rng if seed is not None else contextlib.nullcontext():
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), video_cache=cache,
                                      max_new_tokens=max_new_tokens, eos_token_id=stops,
                                      pad_token_id=self.pad_token_id, streamer=streamer, **options)
        return self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False)

    @torch.no_grad()
    def reply_many(self, video: EncodedVideo, questions: Sequence[str], *, max_new_tokens: int = 512,
                   eos_token_ids: Sequence[int] | None = None, decode: str = "auto") -> list[str]:
        """Greedy replies to several questions about one video, decoded as one batch: the i-th is
        ``reply(video, questions[i], max_new_tokens=..., eos_token_ids=..., decode=...)``, token for token where the
        arithmetic is exact (float32 on the CPU: tests/inference/test_reply_many.py; in bfloat16 a batched matmul may
        round otherwise than one row alone, and so, rarely, pick another token).

        The prompts (each a first question: no history) are left padded to the longest, ``[B, n]`` with the pad id
        and an ``attention_mask [B, n]`` that is 0 on the padding; every row reads the video cache's one row (it is
        not repeated). One ``greedy_decode`` (``decode='static'``; ``auto`` on CUDA) or one ``generate`` call
        (``decode='generate'``; ``auto`` elsewhere) decodes them all; each row's reply ends at its first eos (eos
        included, as ``reply``'s), the padding after it is dropped. Sampling is one question at a time (``reply``
        with its own seed): a batch would share one random stream.
        """
        if decode not in DECODE_LOOPS:
            raise ValueError(f"decode must be one of {DECODE_LOOPS}, got {decode!r}")
        if not questions:
            return []
        prompts = [self.prompt_ids([(question, None)]) for question in questions]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad_token_id] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        cache = video.cache if video.cache.keys[0].device == self.device else video.cache.to(self.device)
        stops = list(self.eos_token_ids if eos_token_ids is None else eos_token_ids)
        if _static_decoding(self.model, decode, do_sample=False):
            out = greedy_decode(self.model, ids, cache, max_new_tokens, stops, self.pad_token_id,
                                attention_mask=mask)
        else:
            out = self.model.generate(input_ids=ids, attention_mask=mask, video_cache=cache,
                                      max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=self.pad_token_id,
                                      do_sample=False, temperature=None, top_p=None, top_k=None)
        return [self.tokenizer.decode(_until_eos(row, stops), skip_special_tokens=True,
                                      clean_up_tokenization_spaces=False) for row in out[:, width:].tolist()]

    def conversation(self, video: EncodedVideo) -> Conversation:
        return Conversation(self, video)


def _until_eos(tokens: list[int], eos: Sequence[int]) -> list[int]:
    """A generated row up to its first eos token (included; the padding after it dropped): what ``generate`` returns
    for that prompt alone."""
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[:i + 1]
    return tokens


def _static_decoding(model, decode: str, do_sample: bool) -> bool:
    """Whether ``reply`` decodes with ``greedy_decode`` (``decode`` as ``VambaChat.reply``)."""
    if decode == "generate" or (decode == "auto" and model.lm_head.weight.device.type != "cuda"):
        return False
    if do_sample:
        if decode == "static":
            raise ValueError("decode='static' is greedy decoding: sampling (do_sample=True) decodes through generate; "
                             "use decode='auto' or 'generate'")
        return False
    settings = unsupported(model)
    if settings and decode == "static":
        raise ValueError(f"decode='static' does not apply the checkpoint's generation_config settings "
                         f"{', '.join(settings)}; use decode='generate'")
    return not settings


class Conversation:
    """A multi-turn chat about one encoded video: each ``ask`` sees the earlier questions and answers."""

    def __init__(self, chat: VambaChat, video: EncodedVideo) -> None:
        self.chat = chat
        self.video = video
        self.turns: list[tuple[str, str]] = []

    def ask(self, question: str, **options: Any) -> str:
        answer = self.chat.ask(self.video, question, history=self.turns, **options)
        self.turns.append((question, answer))
        return answer


@contextlib.contextmanager
def _progress(progress: bool | Callable[[int, int], None], total: int, desc: str):
    """Yields ``update(n)``: a tqdm bar (progress=True), a user callback, or nothing."""
    if callable(progress):
        done = 0

        def update(n: int) -> None:
            nonlocal done
            done += n
            progress(done, total)

        yield update
    elif progress:
        from tqdm.auto import tqdm

        with tqdm(total=total, unit="frame", desc=desc, dynamic_ncols=True, leave=False) as bar:
            yield bar.update
    else:
        yield lambda n: None
