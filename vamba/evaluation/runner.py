"""The evaluation loop: each video encoded once, every question answered and recorded as it finishes.

Run directory layout::

    run.json                 settings of the run (a restart with other settings is refused)
    shards/rank<r>.jsonl     records appended by rank r (flushed + fsync'ed per question)
    shards/rank<r>.status.json  written when rank r has gone through its shard (with its skips and timing)
    shards/runs-rank<r>.jsonl   every such status of rank r, one line per run (a resumed run adds its own)
    responses.jsonl          all records in benchmark order   } written atomically once every
    summary.json, report.md  metrics and the markdown table   } rank has finished

A killed run restarted with the same command continues where it stopped: ids already in any shard are
skipped, so no question is answered twice or lost.

``answer_batch`` > 1 (greedy decoding only) answers a video's questions left in groups of that many through the
model's ``answer_many`` (one batched decoding); each group's records are written as soon as the group finishes, so a
kill loses at most the group under way, which a restart answers again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import Counter
from collections.abc import Container, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from vamba.data.video import VideoDecodeError
from vamba.evaluation.benchmarks.base import Benchmark, ProtocolSpec, Question
from vamba.evaluation.interface import VideoQAModel, VideoRequest
from vamba.evaluation.records import SHARD_DIR, RecordStore, order_by, read_all
from vamba.evaluation.report import render
from vamba.evaluation.scoring import make_record, summarize
from vamba.evaluation.sharding import group_by, shard
from vamba.utils.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from vamba.utils.logging import get_logger
from vamba.utils.paths import is_inside

logger = get_logger(__name__)


class RunMismatchError(ValueError):
    """The run directory holds a run made with different settings."""


class VideoUnavailableError(RuntimeError):
    """A video is missing or cannot be decoded: a model adapter may raise it from ``encode_video`` (the runner then
    skips the video's questions, counted); with ``strict`` the runner raises it and the run stops, as the released
    scripts do."""


def resolve_protocol(benchmark: Benchmark, name: str = "vamba", *, extractor: str | None = None,
                     num_frames: int | None = None, max_new_tokens: int | None = None,
                     do_sample: bool | None = None, seed: int | None = None) -> ProtocolSpec:
    """The benchmark's protocol ``name`` with the given overrides applied (``None`` = keep)."""
    spec = benchmark.protocol(name)
    if extractor is not None:
        spec = dataclasses.replace(spec, extractor=extractor)
    if num_frames is not None:
        spec = dataclasses.replace(
            spec, frames=dataclasses.replace(spec.frames, num_frames=num_frames),
            frame_folder_frames=spec.frame_folder_frames and dataclasses.replace(spec.frame_folder_frames,
                                                                                 num_frames=num_frames))
    gen = spec.generation
    if max_new_tokens is not None:
        gen = dataclasses.replace(gen, max_new_tokens=max_new_tokens)
    if do_sample is not None:
        gen = dataclasses.replace(gen, do_sample=do_sample)
    if seed is not None and gen.do_sample:
        gen = dataclasses.replace(gen, seed=seed)
    return dataclasses.replace(spec, generation=gen)


def question_seed(base: int, qid: str) -> int:
    """Sampling seed of one question: fixed by (base seed, id), whatever the order or the rank."""
    return int.from_bytes(hashlib.sha256(f"{base}:{qid}".encode()).digest()[:4], "little")


# Settings recorded since runs were first made, with the value a run.json written before them stands for.
ADDED_SETTINGS: dict[str, Any] = {"answer_batch": 1, "fp8": "none"}


def _settings(benchmark: Benchmark, protocol: str, spec: ProtocolSpec, seed: int, n_questions: int,
              extra: Mapping[str, Any], answer_batch: int = 1) -> dict[str, Any]:
    # answer_batch is recorded: padded rows of a batch may round otherwise than one prompt alone (bfloat16 on a GPU,
    # and a kernel picked by the batch size), so a greedy answer can change with it.
    return {"benchmark": benchmark.name, "protocol": protocol, "extractor": spec.extractor,
            "frames": dataclasses.asdict(spec.frames),
            "frame_folder_frames": spec.frame_folder_frames and dataclasses.asdict(spec.frame_folder_frames),
            "generation": dataclasses.asdict(spec.generation), "extraction_seed": seed, "questions": n_questions,
            "answer_batch": answer_batch, **dict(extra)}


def _check_or_write_settings(run_dir: Path, settings: dict[str, Any]) -> None:
    path = run_dir / "run.json"
    if path.exists():
        old = json.loads(path.read_text())
        old = {k: old.get(k, ADDED_SETTINGS.get(k)) for k in settings}
        diff = {k: (old[k], v) for k, v in settings.items() if old[k] != v}
        if diff:
            lines = "; ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise RunMismatchError(f"{run_dir} holds a run with other settings ({lines}); "
                                   "use another output directory or remove it")
        return
    atomic_write_json(path, settings)


def evaluate(benchmark: Benchmark, questions: Sequence[Question], model: VideoQAModel, run_dir: str | Path, *,
             protocol: str = "vamba", spec: ProtocolSpec | None = None, seed: int = 0, rank: int = 0,
             world_size: int = 1, extra: Mapping[str, Any] | None = None, progress: bool = True,
             strict: bool = False, media_roots: Sequence[str | Path] | None = None,
             answer_batch: int = 1, reading: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Answer this rank's share of ``questions`` with ``model`` and record them under ``run_dir``.

    :param spec: the protocol (default: ``benchmark.protocol(protocol)``).
    :param seed: seeds random-fallback extractors and, when decoding samples, each question's draw.
    :param extra: more run settings to record and check on restart (e.g. the checkpoint path).
    :param strict: stop with ``VideoUnavailableError`` at the first missing or undecodable video, as the
        released scripts do; otherwise its questions are skipped, counted, and the summary says the score is
        not comparable (``answered`` < ``expected``). Answers recorded before the stop are kept.
    :param media_roots: when given, a video outside all of these folders is never opened: an annotation file from
        elsewhere could name ``/etc/passwd`` or ``../../x``; its questions are skipped (or stop a strict run).
    :param answer_batch: questions of one video answered together by the model's ``answer_many`` (greedy decoding
        only; 1: ``answer`` one at a time). Recorded in ``run.json``: a restart with another value is refused. A
        group's seconds count in its video's ``answer_s`` (a group never spans two videos).
    :param reading: how the model reads videos (e.g. its decode workers), recorded beside the timing they shape and
        never checked: the frames, and so the answers, do not depend on them.
    :return: the summary once every rank has finished (this call finalised it), else ``None``.
    """
    run_dir = Path(run_dir)
    if not questions:
        raise ValueError(f"{benchmark.name}: no questions to evaluate")
    spec = spec or benchmark.protocol(protocol)
    _check_answer_batch(answer_batch, spec, model)
    duplicates = sorted(qid for qid, n in Counter(q.qid for q in questions).items() if n > 1)
    if duplicates:
        raise ValueError(f"{benchmark.name}: question ids must be unique; repeated: {duplicates[:10]}")
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_or_write_settings(run_dir, _settings(benchmark, protocol, spec, seed, len(questions), extra or {},
                                                answer_batch))
    status_path = run_dir / SHARD_DIR / f"rank{rank}.status.json"
    status_path.unlink(missing_ok=True)

    store = RecordStore(run_dir, rank)
    groups = shard(group_by(questions, spec.video_request), rank, world_size)
    mine = {q.qid for g in groups for q in g}
    resumed = [r for r in read_all(run_dir) if r["qid"] in mine]
    correct, answered = sum(r["correct"] for r in resumed), len(resumed)
    skipped: list[dict[str, Any]] = []
    timing: list[dict[str, Any]] = []
    bar = tqdm(total=len(mine), initial=answered, unit="q", desc=f"{benchmark.name} [rank {rank}]",
               disable=not progress or rank != 0, dynamic_ncols=True)
    # A model that can decode ahead (VideoQAModel.prefetch) is told which videos come, in order: those of this
    # rank's shard with questions left that the harness will ask it to encode.
    prefetch = getattr(model, "prefetch", None)
    started = time.perf_counter()
    try:
        if prefetch is not None:
            prefetch([request for request, todo in _work(groups, store.done, spec)
                      if _unavailable(request, media_roots) is None])
        for request, todo in _work(groups, store.done, spec):
            reason = _unavailable(request, media_roots)
            if reason is not None:
                if strict:
                    raise VideoUnavailableError(_strict_stop(request, reason, len(todo), media_roots))
                logger.warning("video %s: %s; skipping its %d questions", reason, request.path, len(todo))
                skipped.append({"video": request.path, "questions": len(todo), "reason": reason})
                bar.update(len(todo))
                continue
            encode_started = time.perf_counter()
            try:
                encoded = model.encode_video(request)
            # A video that cannot be decoded costs its questions, not the run; anything else (out of memory, a
            # bug in the model) stops it.
            except (VideoDecodeError, VideoUnavailableError) as e:
                if strict:
                    raise VideoUnavailableError(f"{request.path}: cannot be decoded ({type(e).__name__}: {e}; "
                                                f"{len(todo)} questions); strict=true stops here as the released "
                                                "evaluation does") from e
                logger.warning("cannot encode %s (%s: %s); skipping its %d questions", request.path,
                               type(e).__name__, e, len(todo))
                skipped.append({"video": request.path, "questions": len(todo), "reason": f"{type(e).__name__}: {e}"})
                bar.update(len(todo))
                continue
            row = _encode_timing(request.path, len(todo), time.perf_counter() - encode_started, encoded)
            timing.append(row)
            for group in _groups(todo, answer_batch):
                prompts = [spec.prompt(q) for q in group]
                answer_started = time.perf_counter()
                if answer_batch == 1:
                    generation = spec.generation
                    if generation.seed is not None:
                        generation = generation.with_seed(question_seed(generation.seed, group[0].qid))
                    responses = [model.answer(encoded, prompts[0], generation)]
                else:
                    responses = list(model.answer_many(encoded, prompts, spec.generation))
                    if len(responses) != len(group):
                        raise RuntimeError(f"answer_many returned {len(responses)} replies to {len(group)} prompts")
                row["answer_s"] += time.perf_counter() - answer_started
                for q, prompt, response in zip(group, prompts, responses):
                    record = make_record(q, prompt, response, spec.extractor, spec.extractor_choices or q.choices,
                                         seed)
                    store.append(record)
                    correct += record["correct"]
                    answered += 1
                    bar.update(1)
                    bar.set_postfix(acc=f"{100 * correct / answered:.1f}%")
            del encoded  # its cache is freed before the next video's is allocated
    finally:
        if prefetch is not None:
            prefetch([])  # the decode workers end with the run, however it ends
        bar.close()
    elapsed = time.perf_counter() - started
    status = {"rank": rank, "world_size": world_size, "skipped": skipped, "videos_encoded": len(timing),
              "seconds": round(elapsed, 3), "reading": dict(reading or {}),
              "timing": timing_totals(timing, elapsed, [rank]) | {"videos": _rounded(timing)}}
    # The status file is this run's; every run's stays in the history (a resumed run would otherwise replace the
    # timing of the run that encoded the videos with its own)
    append_jsonl(run_dir / SHARD_DIR / f"runs-rank{rank}.jsonl",
                 [status | {"finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}])
    atomic_write_json(status_path, status)
    logger.info("rank %d: %d questions in shard, %d videos encoded, %d skipped, %.1f s", rank, len(mine),
                len(timing), sum(s["questions"] for s in skipped), elapsed)
    if not all((run_dir / SHARD_DIR / f"rank{r}.status.json").exists() for r in range(world_size)):
        return None
    return finalize(benchmark, questions, run_dir, protocol=protocol, spec=spec)


def _check_answer_batch(answer_batch: int, spec: ProtocolSpec, model: VideoQAModel) -> None:
    """Refuse a batch size the run cannot use: below 1, with sampled decoding (each question draws with its own
    seed, one at a time), or with a model that has no ``answer_many``."""
    if answer_batch < 1:
        raise ValueError(f"answer_batch (model.answer_batch) must be >= 1, got {answer_batch}")
    if answer_batch == 1:
        return
    if spec.generation.do_sample:
        raise ValueError(f"answer_batch={answer_batch} (model.answer_batch) batches greedy decoding only; this run "
                         "samples (do_sample=true), one question at a time with its own seed: use answer_batch=1")
    if not callable(getattr(model, "answer_many", None)):
        raise ValueError(f"answer_batch={answer_batch} (model.answer_batch) needs a model with answer_many; "
                         f"{type(model).__name__} has none: use answer_batch=1")


def _groups(questions: Sequence[Question], size: int) -> Iterator[list[Question]]:
    """``questions`` in order, ``size`` at a time (the last group may be smaller)."""
    for start in range(0, len(questions), size):
        yield list(questions[start:start + size])


def _strict_stop(request: VideoRequest, reason: str, questions: int,
                 media_roots: Sequence[str | Path] | None) -> str:
    """What a strict run says when it stops at a video the harness does not ask the model for."""
    if reason == "missing":
        return (f"{request.path}: video missing ({questions} questions); strict=true stops here as the released "
                "evaluation does")
    where = ", ".join(str(r) for r in media_roots or ())
    return f"{request.path}: outside the media root ({where}); confine_media=false allows it"


def _work(groups: Sequence[Sequence[Question]], done: Container[str],
          spec: ProtocolSpec) -> Iterator[tuple[VideoRequest, list[Question]]]:
    """Each video with questions left to answer, in the runner's order, and those questions."""
    for group in groups:
        todo = [q for q in group if q.qid not in done]
        if todo:
            yield spec.video_request(todo[0]), todo


def _unavailable(request: VideoRequest, media_roots: Sequence[str | Path] | None) -> str | None:
    """Why the harness will not ask the model for ``request`` ("outside the media root", "missing"), or None."""
    if media_roots is not None and not any(is_inside(request.path, root) for root in media_roots):
        return "outside the media root"
    if not Path(request.path).exists():
        return "missing"
    return None


def _encode_timing(video: str, questions: int, seconds: float, encoded: Any) -> dict[str, Any]:
    """A video's timing row. ``wait_s``: seconds of the encoding the model waited for frames, when the encoded
    object says (an optional ``timing`` mapping, e.g. ``EncodedVideo.timing``; its other entries are kept too);
    ``encode_s``: the rest of the encoding; ``answer_s``: added up as its questions are answered."""
    host = {k: v if isinstance(v, int) else float(v) for k, v in dict(getattr(encoded, "timing", None) or {}).items()}
    wait = min(host.get("wait_s", 0.0), seconds)
    return {"video": video, "questions": questions, "wait_s": wait, "encode_s": seconds - wait, "answer_s": 0.0,
            **{k: v for k, v in host.items() if k != "wait_s"}}


def timing_totals(rows: Sequence[Mapping[str, Any]], wall_s: float, ranks: Sequence[int]) -> dict[str, Any]:
    """Totals of timing rows over ``wall_s`` seconds of wall time (summed over ``ranks``): ``busy_frac`` is the
    share of the wall time the model computed (encoding without the waits for frames, plus answering)."""
    totals = {k: round(sum(r.get(k, 0.0) for r in rows), 3) for k in ("wait_s", "encode_s", "answer_s")}
    busy = totals["encode_s"] + totals["answer_s"]
    return {"ranks": list(ranks), "videos_encoded": len(rows), "questions": sum(r["questions"] for r in rows),
            "wall_s": round(wall_s, 3), **totals, "busy_frac": round(busy / wall_s, 4) if wall_s > 0 else None}


def _rounded(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def finalize(benchmark: Benchmark, questions: Sequence[Question], run_dir: str | Path, *,
             protocol: str = "vamba", spec: ProtocolSpec | None = None) -> dict[str, Any]:
    """Merge every shard into ``responses.jsonl`` and write ``summary.json`` and ``report.md``.

    Idempotent: any rank (or a later call) may run it; all writes are atomic.
    """
    run_dir = Path(run_dir)
    spec = spec or benchmark.protocol(protocol)
    qids = [q.qid for q in questions]
    wanted = set(qids)
    records = order_by([r for r in read_all(run_dir) if r["qid"] in wanted], qids)
    atomic_write_text(run_dir / "responses.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    statuses = [json.loads(p.read_text()) for p in sorted((run_dir / SHARD_DIR).glob("rank*.status.json"))]
    skips = [s for status in statuses for s in status["skipped"]]
    settings = json.loads((run_dir / "run.json").read_text())
    summary = summarize(benchmark, records, protocol=protocol, extractor=spec.extractor,
                        drop_empty=spec.drop_empty_responses, expected=len(qids),
                        skipped={"questions": sum(s["questions"] for s in skips), "videos": len(skips),
                                 "details": skips[:50]},
                        extra={"settings": settings}, loaded_qids=qids,
                        loaded_videos=len({q.video for q in questions}))
    summary["timing"] = _run_timing(statuses)
    atomic_write_json(run_dir / "summary.json", summary)
    atomic_write_text(run_dir / "report.md", render(summary))
    return summary


def _run_timing(statuses: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """summary.json's ``timing``: every rank's last run added up (per-video rows: the ranks' status files)."""
    rows = [row for status in statuses for row in status.get("timing", {}).get("videos", [])]
    return timing_totals(rows, sum(status.get("seconds", 0.0) for status in statuses),
                         [status["rank"] for status in statuses if "timing" in status])


def rescore_file(benchmark: Benchmark, responses: str | Path, out_dir: str | Path, *, protocol: str = "vamba",
                 extractor: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Re-extract and re-score recorded replies without a model (e.g. to compare extraction rules).

    Writes ``responses.jsonl`` (re-scored records), ``summary.json`` and ``report.md`` to ``out_dir``.
    """
    from vamba.evaluation.scoring import rescore

    responses = Path(responses)
    if not responses.is_file():
        raise FileNotFoundError(f"responses file not found: {responses}")
    spec = resolve_protocol(benchmark, protocol, extractor=extractor)
    recorded = read_jsonl(responses)
    if not recorded:
        raise ValueError(f"{responses}: no records to re-score (empty file)")
    records = rescore(recorded, spec.extractor, seed)
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "responses.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    # The frames, decoding and question set behind the replies are those of the run that recorded them: its
    # run.json, when it sits beside the file. Without it they are unknown and the score is not comparable.
    run_json = responses.parent / "run.json"
    recorded_settings = json.loads(run_json.read_text()) if run_json.is_file() else {}
    # The prompt is the recording's (its protocol), the extraction is this re-scoring's.
    settings = {"protocol": protocol, **recorded_settings, "extractor": spec.extractor}
    summary = summarize(benchmark, records, protocol=protocol, extractor=spec.extractor,
                        drop_empty=spec.drop_empty_responses, expected=len(records),
                        extra={"rescored_from": str(responses), "extraction_seed": seed, "settings": settings})
    atomic_write_json(out_dir / "summary.json", summary)
    atomic_write_text(out_dir / "report.md", render(summary))
    return summary


__all__ = ["RunMismatchError", "VideoUnavailableError", "evaluate", "finalize", "question_seed", "rescore_file",
           "resolve_protocol"]
