"""Videos decoded ahead of the model by worker processes (``vamba eval``'s look-ahead; docs/evaluation.md).

An hour-long video takes minutes of one CPU core to decode as the released evaluation does (decord, one thread),
while a GPU encodes its frames in seconds: decoding one video at a time leaves the GPU idle almost all the time.
``FramePrefetcher`` keeps ``workers`` spawned processes decoding the next videos while the model works on the
current one. Each worker reads a video exactly as the in-process path does (``open_request``, then
``VideoPlan.resized``: the same reader calls and the same pre-resize), writes the resized uint8 frames into shared
memory and hands them over through its pipe; ``take`` returns them as ``ReadyFrames``, which ``VambaChat.encode``
patchifies as ``VideoPlan.pieces`` would have, so the encoding is the same bit for bit. A video the model would
otherwise wait for (none decoded is waiting, e.g. a run's first) is split among the idle workers, each decoding a run
of its units from its own opening of the file; the parts, joined, are the same read (``_assign``, ``decode_request``).

Bounds and failures: at most ``ahead`` videos are being decoded or wait decoded (each holds its frames, e.g.
1024 x 308 x 560 x 3 bytes = 0.53 GB for an LVBench video); a video still decoding ``timeout_s`` seconds after a
worker took it has its workers killed (a hung decoder cannot be stopped any other way) and becomes a
``VideoDecodeError`` naming the limit, as does a worker that dies on a file (a decoder crash); a worker that cannot
start or fails for another reason is a ``RuntimeError`` (the run stops). The workers are daemons that ignore
Ctrl-C from their first instant (``vamba.inference.decode_worker``; the parent stops them), are killed by the kernel
when the thread that started them ends (``PR_SET_PDEATHSIG``, so not even a killed parent leaves them behind), and
``close`` (also at exit) kills them.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from typing import Any

import torch
import torch.multiprocessing  # noqa: F401 (registers the pickling that sends a tensor's shared memory, not its bytes)

from vamba.data.video import VideoDecodeError, VideoInfo, VideoReader, decord_available
from vamba.data.vision import PATCH_SIZE, VisionConfig
from vamba.evaluation.interface import VideoRequest
from vamba.evaluation.sampling import frame_indices
from vamba.inference import decode_worker
from vamba.inference.video import PieceStats, ReadyFrames, VideoPlan, folder_reader, open_with_timeout, unit_frames
from vamba.utils.logging import get_logger

logger = get_logger(__name__)

POLL_S = 0.1  # how often the dispatcher thread checks the time limits when no worker has spoken
SHM_WARN_BYTES = 2**30  # less free shared memory than this is worth a warning


def open_request(request: VideoRequest, timeout_s: float | None = None) -> tuple[VideoReader, VideoInfo, list[int]]:
    """Open ``request``'s file (within ``timeout_s``) or frame folder; its reader, header and the source frame
    indices its protocol's sampler picks (a frame folder's counted from its first file's number)."""
    if request.is_frame_folder:
        reader = folder_reader(request.path, request.frame_folder_fps or 25.0)
        info = reader.info()
    else:  # decord can hang opening a file, too
        reader, info = open_with_timeout(request.path, timeout_s=timeout_s)
    indices = frame_indices(request, info.num_frames, info.fps)
    if request.is_frame_folder:
        # Frame-folder samplers count from the first file's number (MVBench: 1); the reader from 0.
        indices = [min(max(i - request.first_frame_index, 0), info.num_frames - 1) for i in indices]
    return reader, info, indices


def request_vision(request: VideoRequest, vision: VisionConfig) -> VisionConfig:
    """The protocol fixes the edge rule; the pixel limits are the checkpoint's (or model.min/max_pixels)."""
    return replace(vision, shortest_edge=request.frames.shortest_edge, longest_edge=request.frames.longest_edge)


def decode_request(request: VideoRequest, vision: VisionConfig, piece_frames: int, part: int = 0,
                   parts: int = 1) -> dict[str, Any]:
    """Open, sample, decode and pre-resize one video, or part ``part`` of ``parts`` of it, in this process (what a
    worker runs): ``frames`` uint8 [T_part, h, w, 3] in shared memory, ``indices`` (the whole video's), ``info``,
    ``decode_s``, ``resize_s``. A part is a run of whole units (``VideoPlan.resized``): part k has units
    ``[k * n // parts, (k + 1) * n // parts)`` of the video's n, so the parts, in order, are the whole read."""
    reader, _, indices = open_request(request)
    plan = VideoPlan.create(request.path, indices=indices, reader=reader, vision=request_vision(request, vision))
    _, h, w = plan.grid
    n = plan.num_units(piece_frames)
    units = (part * n // parts, (part + 1) * n // parts)
    unit = unit_frames(piece_frames)
    count = min(units[1] * unit, len(plan.indices)) - min(units[0] * unit, len(plan.indices))
    frames = torch.empty((count, h * PATCH_SIZE, w * PATCH_SIZE, 3), dtype=torch.uint8).share_memory_()
    stats = PieceStats()
    at = 0
    if count:
        for chunk in plan.resized(piece_frames, stats, units=units):
            frames[at:at + chunk.shape[0]] = chunk
            at += chunk.shape[0]
    if at != count:
        raise VideoDecodeError(f"{request.path}: {at} frames decoded, {count} planned")
    return {"frames": frames, "indices": plan.indices, "info": plan.info, "decode_s": stats.decode_s,
            "resize_s": stats.resize_s}


def join_parts(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One video's result from its parts' (``decode_request``), in part order: the frames concatenated, the seconds
    summed (the CPU time of all its workers)."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    if any(r["indices"] != first["indices"] or r["info"] != first["info"] for r in results):
        raise RuntimeError("the parts of one video disagree on its frames (the file changed while it was read?)")
    return {"frames": torch.cat([r["frames"] for r in results]), "indices": first["indices"], "info": first["info"],
            "decode_s": sum(r["decode_s"] for r in results), "resize_s": sum(r["resize_s"] for r in results)}


@dataclass(eq=False)
class _Job:
    request: VideoRequest
    parts: int = 1  # workers decoding a run of its units each (decode_request)
    done_parts: dict[int, dict[str, Any]] = field(default_factory=dict)  # part -> its result, until all are in
    result: dict[str, Any] | None = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None


@dataclass(eq=False)
class _Worker:
    process: Any  # multiprocessing.Process (spawn context)
    conn: Connection
    ready: bool = False
    job: _Job | None = None
    part: int = 0
    job_id: int = -1
    started: float | None = None  # when it took its job (a worker still starting takes it when it is ready)


class FramePrefetcher:
    """A pool of decode worker processes that decodes the videos of ``start``'s list ahead of ``take`` (module
    docstring). ``vision``: the checkpoint's resize settings (each request's edges replace its own);
    ``piece_frames``: the model's piece size (fixes the reader calls, as in the in-process path). ``split``: a
    video the model would otherwise wait for is shared among the idle workers (``_assign``)."""

    def __init__(self, workers: int, ahead: int, vision: VisionConfig, piece_frames: int,
                 timeout_s: float | None = None, split: bool = True) -> None:
        if workers < 1 or ahead < 1:
            raise ValueError(f"decode workers and look-ahead must be >= 1, got {workers} and {ahead}")
        self.ahead, self.timeout_s = ahead, timeout_s
        self.vision, self.piece_frames = vision, piece_frames
        # decord (and SkippingReader) seek to a part's first frame; PyAV's reader decodes from the file's start for
        # each part, which would cost more time than it saves
        self.split = split and decord_available()
        # Unsplit, at most `ahead` videos decode at once, one worker each: more workers would never work.
        self.workers = workers if self.split else min(workers, ahead)
        if self.workers < workers:
            logger.warning("%d decode workers, not %d: without splitting videos (model.decode_split=false, or no "
                           "decord) at most model.decode_ahead=%d videos decode at once", self.workers, workers, ahead)
        self._ctx = multiprocessing.get_context("spawn")  # nothing of the parent (CUDA, threads) is inherited
        self._cond = threading.Condition()
        self._queue: list[VideoRequest] = []  # upcoming requests, in order, not yet taken
        self._jobs: dict[VideoRequest, _Job] = {}  # given to a worker (decoding, or done and waiting)
        self._pool: list[_Worker] = []
        self._fatal: BaseException | None = None
        self._closing = False
        self._next_id = 0
        self._thread: threading.Thread | None = None
        atexit.register(self.close)
        if os.path.isdir("/dev/shm") and shutil.disk_usage("/dev/shm").free < SHM_WARN_BYTES:
            logger.warning("only %.2f GiB free in /dev/shm, where the decoded videos wait (an LVBench video: 0.53 GB); "
                           "a worker that runs out dies and stops the run: enlarge it (docker --shm-size) or lower "
                           "model.decode_ahead", shutil.disk_usage("/dev/shm").free / 2**30)

    # -- the caller's side ----------------------------------------------------------------------------
    def start(self, requests: Sequence[VideoRequest]) -> None:
        """Decode ``requests`` ahead, in this order (replacing an earlier list; videos no longer listed are
        dropped)."""
        requests = list(dict.fromkeys(requests))
        with self._cond:
            if self._closing:
                raise RuntimeError("the frame prefetcher is closed")
            listed = set(requests)
            for request in [r for r in self._jobs if r not in listed]:
                self._drop(request)
            self._queue = requests
            self._cond.notify_all()
        if self._thread is None:
            self._thread = threading.Thread(target=self._dispatch, name="vamba-prefetch", daemon=True)
            self._thread.start()

    def take(self, request: VideoRequest) -> ReadyFrames | None:
        """``request``'s frames, waiting for them; None when it is not in the list (decode it in process). The
        videos listed before it are dropped. Raises ``VideoDecodeError`` for a video its worker could not decode
        (or that ran past the time limit), ``RuntimeError`` when the workers fail."""
        started = time.perf_counter()
        with self._cond:
            if request not in self._queue:
                return None
            position = self._queue.index(request)
            for dropped in self._queue[:position]:
                self._drop(dropped)
            del self._queue[:position]
            self._cond.notify_all()
            while not (self._fatal or (request in self._jobs and self._jobs[request].done)):
                self._cond.wait(1.0)
            if self._fatal:
                raise RuntimeError(f"the decode workers failed: {self._fatal}") from self._fatal
            job = self._jobs.pop(request)
            self._queue.pop(0)
            self._cond.notify_all()
        if job.error is not None:
            raise job.error
        r = job.result
        stats = PieceStats(decode_s=r["decode_s"], resize_s=r["resize_s"], wait_s=time.perf_counter() - started,
                           parts=job.parts)
        return ReadyFrames(request.path, r["frames"], r["indices"], r["info"], stats)

    def close(self) -> None:
        """Stop the dispatcher and kill every worker (idempotent; also run at exit)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        for worker in self._pool:
            self._stop(worker)
        self._pool.clear()
        self._jobs.clear()
        self._queue.clear()
        atexit.unregister(self.close)

    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        with self._cond:
            return [w.process.pid for w in self._pool if w.process.is_alive()]

    # -- the dispatcher thread ------------------------------------------------------------------------
    def _dispatch(self) -> None:
        # Every worker is started by this thread, so the kernel's PR_SET_PDEATHSIG of every worker refers to it.
        try:
            while True:
                with self._cond:
                    if self._closing:
                        return
                    while len(self._pool) < self.workers:  # at start, and in place of a killed or dead worker
                        self._pool.append(self._spawn())
                    self._assign()
                    conns = {w.conn: w for w in self._pool}
                for conn in wait(list(conns), timeout=POLL_S):
                    worker = conns[conn]
                    try:
                        message = conn.recv()  # outside the lock: takes the frames' shared memory over
                    except (EOFError, OSError):
                        message = None
                    with self._cond:
                        whole = self._receive(worker, message)
                    if whole is not None:  # a split video's last part: joined outside the lock (a copy of its frames)
                        try:
                            result, error = join_parts([whole.done_parts[k] for k in range(whole.parts)]), None
                        except RuntimeError as e:
                            result, error = None, e
                        with self._cond:
                            if self._jobs.get(whole.request) is whole:
                                whole.result, whole.error = result, error
                            whole.done_parts.clear()
                with self._cond:
                    self._expire()
                    self._cond.notify_all()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's take()
            with self._cond:
                self._fatal = self._fatal or e
                self._cond.notify_all()

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=decode_worker.main, args=(child, os.getpid()), name="vamba-decode",
                                    daemon=True)
        process.start()
        child.close()  # the parent's copy: the worker's death must close the pipe
        return _Worker(process, parent)

    def _assign(self) -> None:
        """Give the next listed videos to idle workers, while fewer than ``ahead`` are decoding or waiting. When no
        decoded video is waiting, the model will wait for the next one: it is split among all idle workers (each
        decodes a run of its units, ``decode_request``), so it is ready in about 1/parts of the time. Otherwise a
        video goes to one worker (a part costs a file opening: ~0.8 s for an hour at 640x360 on one core). Workers
        still starting count as idle: the job waits in their pipe, so the run's first video is split among them all
        rather than given whole to the first one up."""
        idle = [w for w in self._pool if w.job is None]
        while idle:
            upcoming = next((r for r in self._queue if r not in self._jobs), None)
            if upcoming is None or len(self._jobs) >= self.ahead:
                return
            waiting = any(job.done for job in self._jobs.values())
            parts = 1 if waiting or not self.split else min(len(idle), self._max_parts(upcoming))
            job = self._jobs[upcoming] = _Job(upcoming, parts=parts)
            for part in range(parts):
                worker = idle.pop(0)
                worker.job, worker.part, worker.job_id = job, part, self._next_id
                worker.started = time.monotonic() if worker.ready else None
                self._next_id += 1
                try:
                    worker.conn.send((worker.job_id, upcoming, self.vision, self.piece_frames, part, parts))
                except OSError:  # it died meanwhile: its pipe's end-of-file reports it on the next wait
                    pass

    def _max_parts(self, request: VideoRequest) -> int:
        """Parts worth making of ``request``: its units, counted from the protocol's frame count (a part with no
        unit would only open the file)."""
        return max(1, -(-request.frames.num_frames // unit_frames(self.piece_frames)))

    def _receive(self, worker: _Worker, message: tuple | None) -> _Job | None:
        """A worker's message (lock held). Returns the job of a split video whose last part just came in: the
        caller joins its parts (``join_parts``) outside the lock."""
        if worker not in self._pool:  # replaced meanwhile (its video was dropped or timed out)
            return None
        if message is None:
            self._died(worker)
            return None
        kind = message[0]
        if kind == "ready":
            worker.ready = True
            if worker.job is not None:  # the job has waited in its pipe: it takes it now
                worker.started = time.monotonic()
            return None
        job, (_, job_id, payload) = worker.job, message
        worker.job = None
        if job is None or job_id != worker.job_id or self._jobs.get(job.request) is not job or job.done:
            return None  # a dropped (or already failed) video's result: its frames are freed with the message
        if kind == "done":
            job.done_parts[worker.part] = payload
            if len(job.done_parts) < job.parts:
                return None
            if job.parts > 1:
                return job
            job.result = payload
            job.done_parts.clear()
            return None
        if kind == "skip":
            job.error = VideoDecodeError(payload)
        else:
            job.error = RuntimeError(f"decode worker failed on {job.request.path}:\n{payload}")
        self._cancel_parts(job)
        return None

    def _died(self, worker: _Worker) -> None:
        worker.process.join(5)
        code = worker.process.exitcode
        self._pool.remove(worker)
        if not worker.ready:
            raise RuntimeError(f"a decode worker process exited while starting (exit code {code})")
        worker.conn.close()
        job = worker.job
        if job is not None and self._jobs.get(job.request) is job and not job.done:
            how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
            if code == -signal.SIGBUS:  # the shared memory (/dev/shm) ran out: every video would fail the same way
                job.error = RuntimeError(f"the decode worker of {job.request.path} died ({how}): is /dev/shm full? "
                                         "Lower model.decode_ahead, or decode in process (model.decode_workers=0)")
            else:
                job.error = VideoDecodeError(f"{job.request.path}: its decode worker process died ({how})")
            self._cancel_parts(job)

    def _cancel_parts(self, job: _Job) -> None:
        """Kill the workers still decoding other parts of ``job`` (lock held), which has failed: their work is lost
        anyway. Its other parts' frames are freed."""
        job.done_parts.clear()
        for worker in list(self._pool):
            if worker.job is job:
                self._replace(worker)

    def _expire(self) -> None:
        if self.timeout_s is None:
            return
        now = time.monotonic()
        for worker in list(self._pool):
            job = worker.job
            if (job is not None and worker.started is not None and worker in self._pool
                    and now - worker.started > self.timeout_s):
                killed = sum(w.job is job for w in self._pool)  # a split video's parts already done are not
                which = "its decode worker process was" if killed == 1 else \
                    f"{killed} decode worker processes of its parts were"
                logger.warning("%s: decoding took longer than %s s; %s killed", job.request.path, self.timeout_s,
                               which)
                job.error = VideoDecodeError(f"{job.request.path}: decoding took longer than {self.timeout_s} s "
                                             f"(model.decode_timeout_s); {which} killed")
                self._cancel_parts(job)

    def _drop(self, request: VideoRequest) -> None:
        """Forget ``request`` (lock held): its frames are freed, its worker killed if it is still decoding."""
        job = self._jobs.pop(request, None)
        for worker in list(self._pool):
            if job is not None and worker.job is job:
                self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        """Kill ``worker``; the dispatcher starts another in its place."""
        self._pool.remove(worker)
        self._stop(worker)

    @staticmethod
    def _stop(worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(10)
        worker.conn.close()
