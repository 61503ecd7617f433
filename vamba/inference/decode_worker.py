"""The loop of a decode worker process (``vamba.inference.prefetch``), in a module that imports nothing heavy.

A spawned process imports its target's module before it runs anything: here that is instant, so the worker stops
listening to Ctrl-C (the terminal sends it to the whole process group; the parent stops its workers) before it
spends seconds importing torch and the decoders, which a Ctrl-C would otherwise interrupt with a traceback.
"""
from __future__ import annotations

import ctypes
import os
import signal
import traceback
from multiprocessing.connection import Connection


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel (Linux) to kill this process when the thread that started it ends, however it ends."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (AttributeError, OSError):  # not Linux: the parent's close() and the daemon flag still stop the workers
        pass
    if os.getppid() != parent_pid:  # the parent ended before the request was in place
        os._exit(0)


def main(conn: Connection, parent_pid: int) -> None:
    """Decode each ``(job_id, request, vision, piece_frames, part, parts)`` sent (``decode_request``), answering
    ``("done", job_id, result)``, ``("skip", job_id, reason)`` (a ``VideoDecodeError``) or ``("error", job_id,
    traceback)``; stop at None or when the parent's end of the pipe closes. Says ``("ready", pid)`` first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    import torch

    from vamba.data.video import VideoDecodeError
    from vamba.inference.prefetch import decode_request

    torch.set_num_threads(1)  # decord and the resize use one core each, as the released evaluation
    conn.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        job_id, request, vision, piece_frames, part, parts = job
        try:
            message: tuple = ("done", job_id, decode_request(request, vision, piece_frames, part, parts))
        except VideoDecodeError as e:
            message = ("skip", job_id, str(e))
        except Exception:  # noqa: BLE001 - reported to the parent, which stops the run
            message = ("error", job_id, traceback.format_exc(limit=8))
        conn.send(message)
        del message  # the frames' shared memory now belongs to the parent
