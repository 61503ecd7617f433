"""``vamba chat``: ask a VAMBA model about a video from the terminal.

    vamba chat --model ckpt/ --video movie.mp4 "What happens at the end?"      # one question, then exit
    vamba chat --model ckpt/ --video movie.mp4                                  # interactive: follow-ups
    vamba chat --model ckpt/ --video lecture.mp4 --fps 1 --frames 3600 "Summarise the talk."

The video is encoded once (progress bar on stderr); answers stream to stdout token by token. In the
interactive mode every question sees the earlier turns and reuses the encoded video; ``/reset`` forgets the
turns, ``/video PATH`` encodes another video, ``/quit`` (or end of input) leaves.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from vamba.data.sampling import FrameSampling
from vamba.data.video import VideoDecodeError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vamba chat", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("question", nargs="?", help="ask this and exit (default: interactive)")
    p.add_argument("--model", required=True, help="checkpoint directory (model + tokenizer)")
    p.add_argument("--video", required=True, help="video file or folder of frames")
    p.add_argument("--frames", type=int, default=None,
                   help="frames to read (with --fps: the cap); default: the checkpoint's processor (128 without one)")
    p.add_argument("--fps", type=float, default=None, help="read frames at this rate instead of uniformly")
    p.add_argument("--shortest-edge", type=int, default=None, help="VAMBA pre-resize: raise sides to this")
    p.add_argument("--longest-edge", type=int, default=None, help="VAMBA pre-resize: cap the long side")
    p.add_argument("--min-pixels", type=int, default=None, help="smart-resize floor (default: the checkpoint's)")
    p.add_argument("--max-pixels", type=int, default=None, help="smart-resize cap (default: the checkpoint's)")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--piece-frames", type=int, default=128, help="frames per piece of the streaming prefill")
    p.add_argument("--decode-timeout", type=float, default=1800.0,  # VambaChat.DEFAULT_DECODE_TIMEOUT_S
                   help="seconds a video may take to open and decode (decord hangs on some files); 0: no limit")
    p.add_argument("--interactive", "-i", action="store_true", help="keep asking after the first question")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from transformers import TextStreamer

    from vamba.inference.chat import VambaChat

    if args.frames is not None and args.frames < 1:
        print("vamba chat: --frames must be >= 1", file=sys.stderr)
        return 2
    try:
        # Resize and frame defaults are the checkpoint's (its processor files); the flags given here win.
        chat = VambaChat.from_pretrained(args.model, device=args.device, dtype=args.dtype,
                                         piece_frames=args.piece_frames,
                                         decode_timeout_s=args.decode_timeout if args.decode_timeout > 0 else None)
        edits = {"shortest_edge": args.shortest_edge, "longest_edge": args.longest_edge,
                 "min_pixels": args.min_pixels, "max_pixels": args.max_pixels}
        chat.vision = replace(chat.vision, **{k: v for k, v in edits.items() if v is not None})
        frames = chat.sampling.num_frames if args.frames is None else args.frames
        fps = args.fps or (chat.sampling.fps if chat.sampling.mode == "fps" and args.frames is None else None)
        sampling = FrameSampling("fps", frames, fps=fps) if fps else FrameSampling("uniform", frames)
        video = chat.encode(args.video, sampling=sampling, progress=True)
    except (FileNotFoundError, ValueError, VideoDecodeError) as e:
        print(f"vamba chat: {e}", file=sys.stderr)
        return 2
    print(f"[{video.frames} frames, {video.tokens} video tokens, encoded in {video.seconds:.1f} s]", file=sys.stderr)
    options = dict(max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature,
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
