"""Decoding speed against a cached video, old path vs new, beside the memory-bandwidth floor
(``scripts/bench_answer.py``).

For each frame count, greedy decoding of ``answer_tokens`` tokens after a ``question_tokens`` prompt, batch 1, by:

- ``generate``: transformers' ``generate`` with ``decode_attention=reference`` (the path before issue 30);
- ``generate_split``: ``generate`` with the split-K decoding cross-attention (the attention change alone);
- ``static``: ``vamba.models.fast_decode.greedy_decode`` run eagerly (static text cache, split attention);
- ``graph``: ``greedy_decode`` with its step replayed in a CUDA graph (the new path; CUDA only).

The video cache is what a streamed prefill leaves: per layer keys and values ``[1, Hkv, M, head_dim]`` with ``M``
video tokens for the frame count and ``frame_size``. Decoding only reads it, so it is filled with random values
instead of running the vision tower and Mamba-2 blocks (minutes at the hour); the weights are random too and the
reply is held to exactly ``answer_tokens`` tokens (``min_new_tokens``). Times come from a streamer that notes when
each token reaches the host (``TokenClock``): ``tokens_per_s`` is the steady rate from the second decoded token to
the last (the first decoding step of ``graph`` includes its capture, reported as ``first_step_ms``), the median over
``reps`` replies after one warm-up reply.

The floor: each token reads at least the text path's weights (every decoder weight but the vision tower, the Mamba-2
blocks and the cross-attention K/V projections, plus lm_head) and every layer's cached video K/V (and the text K/V
so far); ``floor_tokens_per_s`` = measured copy bandwidth / those bytes. Results go to
``answer_decode_<tag>.json`` after every point, with the provenance header (``vamba.utils.provenance.header``).

    python scripts/bench_answer.py out=docs/results tag=h200                       # 7B, 1,024 and 3,600 frames
    python scripts/bench_answer.py device=cpu scale=tiny num_frames=[4,8] answer_tokens=4 out=/tmp/answer
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from vamba.bench.build import DTYPES, Setup, build, device_tag, frame_grid, parse_frame_size, vamba_config
from vamba.bench.hour import TokenClock
from vamba.models.cache import VideoCache
from vamba.models.fast_decode import greedy_decode
from vamba.utils.cli_args import auto_dtype, parse_args
from vamba.utils.io import atomic_write_json
from vamba.utils.provenance import header
from vamba.utils.timing import GIB, free, is_oom, measure

Path_ = Literal["generate", "generate_split", "static", "graph"]
PATHS: tuple[str, ...] = ("generate", "generate_split", "static", "graph")
# Tokens per second the issue asks for at 7B, batch 1, greedy: {device kind: {frames: goal}}.
GOALS = {"h200": {3600: 40.0, 1024: 80.0}, "h100": {3600: 28.0, 1024: 56.0}}


@dataclass
class AnswerBenchConfig:
    out: str = "docs/results"  # folder of the JSON
    tag: str | None = None  # file name tag (default: device kind, e.g. h200 or cpu)
    device: str = "auto"  # auto (cuda when present, else cpu) | cpu | cuda | cuda:N
    scale: Literal["7b", "2b", "tiny"] = "7b"  # model dimensions (tiny: CPU checks)
    dtype: str = "auto"  # auto (bfloat16 on CUDA, float32 on CPU) | bfloat16 | float16 | float32
    num_frames: list[int] = field(default_factory=lambda: [1024, 3600])  # frame counts (video cache lengths)
    frame_size: str = "640x360"  # WIDTHxHEIGHT of the source frames (tokens per frame pair)
    question_tokens: int = 32  # prompt tokens
    answer_tokens: int = 64  # tokens decoded per reply (exactly: min_new_tokens)
    paths: list[Path_] = field(default_factory=lambda: list(PATHS))  # decoding paths, in this order
    reps: int = 2  # timed replies per point after one warm-up reply (median)
    memory_gib: float | None = None  # cap this process's GPU memory (e.g. 79.2: an 80 GB card's room)


def text_path_bytes(model) -> int:
    """Bytes of the weights one decoding step reads (module docstring)."""
    skip = ("visual.", ".vision_mixer.", ".cross_attn.k_proj.", ".cross_attn.v_proj.", "model.embed_tokens.")
    total = sum(p.numel() * p.element_size() for name, p in model.named_parameters()
                if not any(s in name for s in skip))
    head = model.lm_head.weight
    if head is model.model.embed_tokens.weight:  # tied: named once, as the embedding
        total += head.numel() * head.element_size()
    return total


def random_cache(model, tokens: int, device: torch.device, dtype: torch.dtype, seed: int = 0) -> VideoCache:
    """A one-row ``VideoCache`` of ``tokens`` video tokens with random keys and values (module docstring)."""
    text = model.config.text_config
    shape = (1, text.num_key_value_heads, tokens, text.hidden_size // text.num_attention_heads)
    g = torch.Generator(device=device).manual_seed(seed)
    keys = [torch.randn(shape, generator=g, device=device, dtype=dtype) for _ in range(text.num_hidden_layers)]
    values = [torch.randn(shape, generator=g, device=device, dtype=dtype) for _ in range(text.num_hidden_layers)]
    return VideoCache(keys, values, torch.zeros(1, tokens, dtype=torch.long, device=device))


def copy_gbps(device: torch.device) -> float:
    """Measured copy bandwidth: bytes read + written per second / 1e9 (2 GiB on CUDA, 64 MiB on the CPU)."""
    n = 2**29 if device.type == "cuda" else 2**24
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    out = measure(lambda: dst.copy_(src), device, reps=10, warmup=2)
    if out["status"] != "ok":
        raise RuntimeError(f"the copy that measures the bandwidth failed: {out}")
    return 2 * n * 4 / out["total_ms"] / 1e6


def decode_once(model, path: str, ids: torch.Tensor, cache: VideoCache, tokens: int) -> dict[str, Any]:
    """One reply by ``path``: its tokens and the host times of each (``TokenClock``)."""
    clock = TokenClock()
    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
    sync()
    started = time.perf_counter()
    model.config.decode_attention = "reference" if path == "generate" else "auto" if ids.is_cuda else "split"
    if path.startswith("generate"):
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), video_cache=cache,
                             max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, temperature=None,
                             top_p=None, top_k=None, eos_token_id=[], pad_token_id=0, streamer=clock)
    else:
        out = greedy_decode(model, ids, cache, tokens, [], 0, min_new_tokens=tokens, streamer=clock,
                            cuda_graph=path == "graph")
    times = clock.times[1:]  # times[0]: the prompt handed to the streamer
    return {"tokens": out[0, ids.shape[1]:].tolist(), "first_token_ms": 1e3 * (times[0] - started),
            "first_step_ms": 1e3 * (times[1] - times[0]) if len(times) > 1 else None,
            "tokens_per_s": (len(times) - 2) / (times[-1] - times[1]) if len(times) > 2 else None}


def measure_path(model, path: str, ids: torch.Tensor, cache: VideoCache, tokens: int, reps: int) -> dict[str, Any]:
    runs = []
    try:
        for _ in range(1 + reps):
            runs.append(decode_once(model, path, ids, cache, tokens))
    except Exception as e:  # noqa: BLE001 - a point that fails is recorded; the benchmark goes on
        free(ids.device)
        return {"status": "oom"} if is_oom(e) else {"status": "error", "error": f"{type(e).__name__}: {e}"[:500]}
    timed = runs[1:] or runs
    rates = [r["tokens_per_s"] for r in timed if r["tokens_per_s"] is not None]
    return {"status": "ok", "tokens": timed[-1]["tokens"], "replies": len(timed),
            "tokens_per_s": round(statistics.median(rates), 2) if rates else None,
            "all_tokens_per_s": [round(r, 2) for r in rates],
            "first_token_ms": round(statistics.median(r["first_token_ms"] for r in timed), 2),
            "first_step_ms": round(statistics.median(r["first_step_ms"] for r in timed), 2)
            if timed[0]["first_step_ms"] is not None else None,
            "warmup_first_step_ms": round(runs[0]["first_step_ms"], 2) if runs[0]["first_step_ms"] else None}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(AnswerBenchConfig, sys.argv[1:] if argv is None else argv, prog="bench_answer.py",
                      doc=__doc__ or "")
    from vamba.models import VambaForConditionalGeneration

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    cuda = device.type == "cuda"
    dtype = DTYPES[auto_dtype(args.dtype, str(device))]
    if any(n < 2 or n % 2 for n in args.num_frames):
        raise SystemExit("bench_answer.py: frame counts must be even and >= 2")
    if args.memory_gib and cuda:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_gib * GIB / total), device)
    name, kind = device_tag(device)
    tag = args.tag or kind
    path = Path(args.out) / f"answer_decode_{tag}.json"
    torch.manual_seed(0)
    setup = Setup(device, dtype, frame_grid(*parse_frame_size(args.frame_size)), args.question_tokens, 0, 0)
    started = time.monotonic()
    model = build(VambaForConditionalGeneration, vamba_config(args.scale, "fast" if cuda else "reference"), device,
                  dtype)
    weights = text_path_bytes(model)
    bandwidth = copy_gbps(device)
    text = model.config.text_config
    result: dict[str, Any] = {
        "what": __doc__.splitlines()[0], **header(device),
        "setup": {"scale": args.scale, "dtype": str(dtype).removeprefix("torch."), "frame_size": args.frame_size,
                  "tokens_per_2_frames": setup.video_tokens(2), "question_tokens": args.question_tokens,
                  "answer_tokens": args.answer_tokens, "batch": 1, "reps": args.reps,
                  "attention_backend": model.config.attention_backend, "build_s": round(time.monotonic() - started, 1),
                  "memory_cap_gib": args.memory_gib},
        "text_path_weight_bytes": weights, "copy_gbps": round(bandwidth, 3),
        "goals_tokens_per_s": GOALS.get(kind, {}), "rows": []}
    ids = setup.text(args.question_tokens, text.vocab_size)
    for frames in sorted(set(args.num_frames)):
        m = setup.video_tokens(frames)
        try:
            cache = random_cache(model, m, device, dtype)
        except Exception as e:  # noqa: BLE001 - recorded like a point
            if not is_oom(e):
                raise
            result["rows"].extend({"frames": frames, "video_tokens": m, "path": p, "status": "oom"}
                                  for p in args.paths)
            atomic_write_json(path, result)
            continue
        cache_bytes = sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
        kv_per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * cache.keys[0].shape[-1] * \
            cache.keys[0].element_size()
        text_kv = kv_per_token * (args.question_tokens + args.answer_tokens / 2)  # the reply's mean
        per_token = weights + cache_bytes + text_kv
        floor = bandwidth * 1e9 / per_token
        reference_tokens = None
        for p in args.paths:
            row: dict[str, Any] = {"frames": frames, "video_tokens": m, "path": p, "bytes_per_token": int(per_token),
                                   "cache_gib": round(cache_bytes / GIB, 3), "floor_tokens_per_s": round(floor, 1)}
            if p == "graph" and not cuda:
                row["status"] = "skipped: CUDA graphs need CUDA"
            else:
                row.update(measure_path(model, p, ids, cache, args.answer_tokens, args.reps))
            if row["status"] == "ok":
                tokens = row.pop("tokens")
                reference_tokens = tokens if reference_tokens is None else reference_tokens
                row["same_tokens_as_first_path"] = tokens == reference_tokens
                if row["tokens_per_s"]:
                    row["of_floor"] = round(row["tokens_per_s"] / floor, 3)
                    goal = GOALS.get(kind, {}).get(frames) if args.scale == "7b" else None
                    if goal is not None:
                        row["goal_tokens_per_s"], row["goal_met"] = goal, row["tokens_per_s"] >= goal
            result["rows"].append(row)
            atomic_write_json(path, result)
            print(line(row), flush=True)
        del cache
        free(device)
    model.config.decode_attention = "auto"
    print(table(result))
    print(f"wrote {path}")
    return 0


def line(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return f"{row['frames']:>6} frames {row['path']:<15} {row['status']}"
    rate = f"{row['tokens_per_s']:.1f}" if row["tokens_per_s"] else "-"
    return (f"{row['frames']:>6} frames {row['path']:<15} {rate:>8} tokens/s (floor {row['floor_tokens_per_s']:.0f}), "
            f"first token {row['first_token_ms']:.0f} ms, first step {row['first_step_ms']} ms")


def table(result: dict[str, Any]) -> str:
    """The short table: frames x path -> tokens/s, share of the floor, speed-up over the first path, goal."""
    out = [f"\n{result['device']}, {result['setup']['scale']} {result['setup']['dtype']}, copy "
           f"{result['copy_gbps']:.0f} GB/s, text-path weights {result['text_path_weight_bytes'] / 1e9:.2f} GB",
           f"{'frames':>6} {'video tokens':>12} {'path':<15} {'tokens/s':>9} {'floor':>7} {'of floor':>9} "
           f"{'speed-up':>9} {'same':>5} goal"]
    base: dict[int, float] = {}
    for r in result["rows"]:
        rate = r.get("tokens_per_s") if r["status"] == "ok" else None
        if rate and r["frames"] not in base:
            base[r["frames"]] = rate
        up = f"{rate / base[r['frames']]:.2f}x" if rate and r["frames"] in base else "-"
        goal = "" if "goal_met" not in r else \
            f"{'met' if r['goal_met'] else 'NOT met'} (>= {r['goal_tokens_per_s']:.0f})"
        out.append(f"{r['frames']:>6} {r['video_tokens']:>12} {r['path']:<15} "
                   f"{(f'{rate:.1f}' if rate else r['status'][:9]):>9} {r.get('floor_tokens_per_s', 0):>7.0f} "
                   f"{str(r.get('of_floor', '-')):>9} {up:>9} {str(r.get('same_tokens_as_first_path', '-')):>5} "
                   f"{goal}")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
