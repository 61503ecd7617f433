"""Ending a torch.distributed run: without an abort at interpreter exit when it succeeded, at once when one failed."""
from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

# All-reduced (a sum of zeros) to drain gloo; module-level so that Python, not a worker thread, frees it last.
_TOKEN = torch.zeros(1)
# Sub-groups this rank belongs to, in creation order (the same on every rank): each has its own gloo worker
# threads, drained like the default group's.
_SUBGROUPS: list = []
# Whether close_process_group ended a group of more than one rank in this process (see end_process).
_CLOSED_MULTI_RANK = False


def register_subgroup(group) -> None:
    """Have ``close_process_group`` drain ``group`` (a ``new_group`` this rank is a member of) before tear-down."""
    _SUBGROUPS.append(group)


def close_process_group() -> None:
    """Drain the gloo worker threads, then destroy every process group (no-op when none is open).

    Why the drain: gloo's ``barrier`` keeps references to the collectives still pending when it was
    issued (DeepSpeed's asynchronous all-gathers, accelerate's ``wait_for_everyone``). When a gloo worker
    thread drops the barrier it can run those collectives' destructors, which release Python-owned tensors
    and so take the GIL. If that happens while the main thread is already finalising the interpreter, the
    worker thread is killed inside a noexcept destructor: ``terminate called without an active exception``
    and the rank exits with SIGABRT after a run that succeeded (seen 1 in ~20 two-rank CPU runs; the core
    dump shows ``~AsyncBarrierWork -> ~AsyncAllgatherWork -> decref_pyobject -> take_gil`` on the worker
    thread, ``Py_FinalizeEx`` on the main one). A blocking all-reduce on a tensor we keep alive releases the
    GIL for a round trip between the ranks, by which time the worker threads have finished the work they had,
    and leaves none behind that owns a Python object. Only gloo is drained: the abort was seen with gloo, and
    a CPU tensor cannot go through NCCL.
    """
    global _CLOSED_MULTI_RANK
    if not (dist.is_available() and dist.is_initialized()):
        return
    _CLOSED_MULTI_RANK = _CLOSED_MULTI_RANK or dist.get_world_size() > 1
    for group in _SUBGROUPS:  # (context-parallel groups: all_gather_object etc. leave work on their threads too)
        if dist.get_backend(group) == "gloo":
            dist.all_reduce(_TOKEN, group=group)
    _SUBGROUPS.clear()
    if dist.get_backend() == "gloo":
        dist.all_reduce(_TOKEN)
    dist.destroy_process_group()


def end_process(code: int) -> int:
    """After a multi-rank run that succeeded and closed its group: flush what is buffered and end the process with
    ``code`` now, skipping the interpreter's finalisation; else return ``code``.

    The drain above made the abort at exit rarer but did not remove it: on 2026-12-07 it still ended one rank of a
    two-process CPU run in about 1 of 8 (``terminate called without an active exception`` right after the run's
    last line, SIGABRT, the run's files all written), in two tests of CI. A gloo worker thread that releases a
    Python object while ``Py_FinalizeEx`` runs is killed in a noexcept destructor; a process that never finalises
    cannot meet it. What finalisation would still do is done here: wandb's run is finished (its own exit hook would
    upload the last data), logging's handlers and the standard streams are flushed. A one-process run (and every
    in-process test) returns as before."""
    if not _CLOSED_MULTI_RANK:
        return code
    import logging

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def is_distributed() -> bool:
    """Whether a process group of more than one rank is open."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def exit_failed(code: int = 1, error: BaseException | None = None) -> NoReturn:
    """End this rank now after an error, printing ``error``'s traceback first (the run's first error, on this rank).

    No collective and no tear-down of the process group: the other ranks may be anywhere (in a step's all-reduce,
    in the Trainer's set-up broadcast), so ``close_process_group``'s drain would wait for them until the group's
    timeout (30 minutes by default), and a group's destructor can wait on work in flight too. ``os._exit`` ends the
    process at once; torchrun then stops the other ranks (and without torchrun their next collective fails on the
    closed connection, or at ``parallel.ddp_timeout``)."""
    if error is not None:
        traceback.print_exception(error, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def on_rank_zero(fn: Callable[[], T], what: str) -> T | None:
    """``fn()`` on rank 0 only (None elsewhere); every rank learns whether it succeeded.

    Set-up that only rank 0 does (run files, cleaning) used to fail there alone while the other ranks went on to
    their next collective and waited in it until the timeout. Now a failure is broadcast: rank 0 raises its error,
    every other rank a ``RuntimeError`` naming ``what``, and all of them stop together."""
    if not is_distributed():
        return fn()
    result, failure = None, None
    if dist.get_rank() == 0:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 (re-raised below, after the others were told)
            failure = e
    message = [None if failure is None else f"{type(failure).__name__}: {failure}"]
    dist.broadcast_object_list(message, src=0)
    if failure is not None:
        raise failure
    if message[0] is not None:
        raise RuntimeError(f"{what} failed on rank 0: {message[0]}")
    return result
