"""``vamba chat``: ask a VAMBA model about a video from the terminal.

    vamba chat model.path=ckpt/ video=movie.mp4 "What happens at the end?"     # one question, then exit
    vamba chat model.path=ckpt/ video=movie.mp4                                 # interactive: follow-ups
    vamba chat model.path=ckpt/ video=lecture.mp4 fps=1 num_frames=3600 "Summarise the talk."

The video is encoded once (progress bar on stderr); answers stream to stdout token by token. In the
interactive mode every question sees the earlier turns and reuses the encoded video; ``/reset`` forgets the
turns, ``/video PATH`` encodes another video, ``/quit`` (or end of input) leaves.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace

from vamba.data.sampling import FrameSampling
from vamba.data.video import VideoDecodeError
from vamba.utils.cli_args import auto_dtype, parse_args


@dataclass
class ChatModelConfig:
    """``model.*``: the checkpoint and where it runs (the same keys as ``vamba eval``'s ``model.*``)."""

    path: str = "???"  # checkpoint directory (model + tokenizer + processor files)
    device: str = "auto"  # auto (this rank's GPU, else CPU) | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bfloat16 on CUDA, float32 on CPU) | bfloat16 | float16 | float32
    min_pixels: int | None = None  # smart-resize floor (default: the checkpoint's processor files)
    max_pixels: int | None = None  # smart-resize cap (default: the checkpoint's processor files)
    shortest_edge: int | None = None  # VAMBA pre-resize: raise sides to this
    longest_edge: int | None = None  # VAMBA pre-resize: cap the long side
    fp8: str = "none"  # FP8 layers on Hopper (VambaConfig.fp8, docs/fp8.md): none | vision | all


@dataclass
class ChatConfig:
    video: str = "???"  # video file or folder of frames
    question: str | None = None  # ask this and exit (default: interactive); also the one positional argument
    num_frames: int | None = None  # frames to read (with fps: the cap); default: the checkpoint's processor (128)
    fps: float | None = None  # read frames at this rate instead of uniformly
    max_new_tokens: int = 512
    do_sample: bool = False  # sample instead of greedy decoding
    temperature: float = 0.7  # with do_sample
    top_p: float = 0.9  # with do_sample
    seed: int | None = None
    piece_frames: int = 128  # frames per piece of the streaming prefill
    interactive: bool = False  # keep asking after the first question
    # seconds the video may take to open and decode (decord hangs on some files); 0 or None: no limit
    decode_timeout_s: float | None = 1800.0  # (VambaChat.DEFAULT_DECODE_TIMEOUT_S)
    model: ChatModelConfig = field(default_factory=ChatModelConfig)


# The argparse flags of earlier versions (``--model ckpt``, ``--frames 8``, ``--sample``, ``-i``) -> the key now.
DEPRECATED = {"model": "model.path", "frames": "num_frames", "sample": "do_sample", "i": "interactive",
              "decode_timeout": "decode_timeout_s",
              **{k: f"model.{k}" for k in ("device", "dtype", "min_pixels", "max_pixels", "shortest_edge",
                                           "longest_edge")}}


def parse(argv: list[str]) -> ChatConfig:
    return parse_args(ChatConfig, argv, prog="vamba chat", doc=__doc__ or "", positional=("question",),
                      deprecated=DEPRECATED)


def main(argv: list[str]) -> int:
    args = parse(argv)
    from transformers import TextStreamer

    from vamba.inference.chat import VambaChat

    if args.num_frames is not None and args.num_frames < 1:
        print("vamba chat: num_frames must be >= 1", file=sys.stderr)
        return 2
    if args.do_sample and (args.temperature <= 0 or not 0 < args.top_p <= 1):
        print(f"vamba chat: do_sample=true needs temperature > 0 and 0 < top_p <= 1, got temperature="
              f"{args.temperature}, top_p={args.top_p} (greedy decoding: do_sample=false)", file=sys.stderr)
        return 2
    try:
        # Resize and frame defaults are the checkpoint's (its processor files); the keys given here win.
        chat = VambaChat.from_pretrained(args.model.path, device=args.model.device,
                                         dtype=auto_dtype(args.model.dtype, args.model.device),
                                         piece_frames=args.piece_frames,
                                         decode_timeout_s=args.decode_timeout_s or None, fp8=args.model.fp8)
        edits = {"shortest_edge": args.model.shortest_edge, "longest_edge": args.model.longest_edge,
                 "min_pixels": args.model.min_pixels, "max_pixels": args.model.max_pixels}
        chat.vision = replace(chat.vision, **{k: v for k, v in edits.items() if v is not None})
        frames = chat.sampling.num_frames if args.num_frames is None else args.num_frames
        # the processor's rule (VambaVideoProcessor.frame_sampling): a checkpoint that samples at a rate keeps it,
        # num_frames is then its cap, as through transformers
        fps = args.fps or (chat.sampling.fps if chat.sampling.mode == "fps" else None)
        sampling = FrameSampling("fps", frames, fps=fps) if fps else FrameSampling("uniform", frames)
        video = chat.encode(args.video, sampling=sampling, progress=True)
    except (FileNotFoundError, ValueError, VideoDecodeError) as e:
        print(f"vamba chat: {e}", file=sys.stderr)
        return 2
    print(f"[{video.frames} frames, {video.tokens} video tokens, encoded in {video.seconds:.1f} s]", file=sys.stderr)
    options = dict(max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, temperature=args.temperature,
                   top_p=args.top_p, seed=args.seed)
    conversation = chat.conversation(video)

    def ask(question: str) -> None:
        streamer = TextStreamer(chat.tokenizer, skip_prompt=True, skip_special_tokens=True)
        conversation.ask(question, streamer=streamer, **options)
        sys.stdout.flush()

    if args.question:
        ask(args.question)
        if not args.interactive:
            return 0
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            return 0
        question = line.strip()
        if not question:
            continue
        if question in ("/quit", "/exit"):
            return 0
        if question.startswith("/video "):
            video = conversation = None  # free the old video's cache first: two hour-long caches may not fit
            try:
                video = chat.encode(question.split(" ", 1)[1].strip(), sampling=sampling, progress=True)
            except (FileNotFoundError, VideoDecodeError) as e:
                print(f"vamba chat: {e}; give /video PATH again", file=sys.stderr)
                continue
            conversation = chat.conversation(video)
            print(f"[{video.frames} frames, {video.tokens} video tokens, encoded in {video.seconds:.1f} s]",
                  file=sys.stderr)
            continue
        if conversation is None:
            print("vamba chat: no video encoded; give /video PATH", file=sys.stderr)
            continue
        if question == "/reset":
            conversation = chat.conversation(video)
            continue
        ask(question)
