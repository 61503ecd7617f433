"""Refusing a checkpoint whose pickles could run code, before anything unpickles it in full (docs/training.md).

DeepSpeed's engine loads ``global_step*/*_states.pt`` with ``torch.load(weights_only=False)``: a checkpoint someone
sent you would run whatever its pickles name. ``check_checkpoint_pickles`` loads every pickle file of a checkpoint
first with ``torch.load(weights_only=True)`` (tensors memory-mapped, not read), which admits only tensors, plain
containers and the globals listed in ``allowed_globals``: the few classes DeepSpeed's and the Trainer's own files
hold (found by writing real ZeRO-2 checkpoints on CPU). A file naming anything else is refused, naming the file and
the global, before DeepSpeed or the Trainer opens it. Needs torch >= 2.6 (``torch.serialization.safe_globals``
with the allow-list semantics used here).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

# Files the Trainer writes but never loads on resume: the pickled TrainingArguments (full of transformers and
# accelerate classes). Nothing reads it, so it is not scanned; anything else with these suffixes is.
NEVER_LOADED = frozenset({"training_args.bin"})
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")


class UntrustedCheckpointError(RuntimeError):
    """A checkpoint file holds a pickle that weights-only loading refuses: it could run code when unpickled."""


def allowed_globals() -> list:
    """What our own checkpoints' pickles contain beyond tensors: DeepSpeed's ZeRO optimizer states (its loss scaler,
    the ZeRO stage enum, the fragment addresses of flat parameter groups) and the Trainer's RNG state (numpy
    arrays). Each is data: an enum, a dataclass, a class whose state is plain attributes, numpy's array rebuild."""
    from vamba.models.zero import checkpoint_classes

    numpy_core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed the module
    return [numpy_core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32)), *checkpoint_classes()]


def pickle_files(checkpoint: str | os.PathLike) -> list[Path]:
    """Every file under ``checkpoint`` that the Trainer or DeepSpeed may unpickle on resume."""
    return sorted(p for p in Path(checkpoint).rglob("*")
                  if p.is_file() and p.suffix in PICKLE_SUFFIXES and p.name not in NEVER_LOADED)


def check_checkpoint_pickles(checkpoint: str | os.PathLike) -> int:
    """Weights-only load of every pickle file of ``checkpoint``; returns how many were checked.

    Raises ``UntrustedCheckpointError`` naming the first file that weights-only loading refuses (and why, with the
    global it names), or a clear error on a torch without ``safe_globals`` (< 2.5; the project needs >= 2.6).
    """
    if not hasattr(torch.serialization, "safe_globals"):
        raise UntrustedCheckpointError(f"torch {torch.__version__} cannot check {checkpoint} before resuming (needs "
                                       "torch >= 2.6 for weights-only loading with an allow-list)")
    files = pickle_files(checkpoint)
    with torch.serialization.safe_globals(allowed_globals()):
        for path in files:
            try:
                # mmap: the tensors' bytes are mapped, not read; only the pickle itself is parsed here.
                torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:  # pickle.UnpicklingError mostly; also a file that is not a torch zip at all
                first = str(e).strip().splitlines()
                reason = next((line.strip() for line in first if "GLOBAL" in line or "Unsupported" in line),
                              first[0] if first else type(e).__name__)
                raise UntrustedCheckpointError(
                    f"{path}: refused before resuming: its pickle could run code when DeepSpeed or the Trainer loads "
                    f"it ({reason}). Resume only from checkpoints you wrote; a file you trust can be loaded by hand "
                    "with torch.load(weights_only=False).") from None
    return len(files)
