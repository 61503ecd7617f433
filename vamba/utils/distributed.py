"""Ending a torch.distributed run without an abort at interpreter exit."""
from __future__ import annotations

import torch
import torch.distributed as dist

# All-reduced (a sum of zeros) to drain gloo; module-level so that Python, not a worker thread, frees it last.
_TOKEN = torch.zeros(1)
# Sub-groups this rank belongs to, in creation order (the same on every rank): each has its own gloo worker
# threads, drained like the default group's.
_SUBGROUPS: list = []


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
    if not (dist.is_available() and dist.is_initialized()):
        return
    for group in _SUBGROUPS:  # (context-parallel groups: all_gather_object etc. leave work on their threads too)
        if dist.get_backend(group) == "gloo":
            dist.all_reduce(_TOKEN, group=group)
    _SUBGROUPS.clear()
    if dist.get_backend() == "gloo":
        dist.all_reduce(_TOKEN)
    dist.destroy_process_group()
