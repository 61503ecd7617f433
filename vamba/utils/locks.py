"""Exclusive locks on a folder (a run directory, a distillation cache) with ``fcntl.flock``.

A lock is the kernel's, not a file's existence: it is released when its holder closes the file or dies (``kill -9``
included), so a crashed run never leaves a stale lock to delete by hand. The lock file keeps the holder's pid, host
and start time only to name it in the error a second process gets. flock works on local file systems and on NFSv4
(Linux emulates it with a POSIX lock there); on file systems without locks it raises, and we say so.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LOCK_NAME = ".lock"


class FolderLocked(RuntimeError):
    """Another live process holds the folder's lock."""


class FolderLock:
    """``with FolderLock(folder): ...`` or ``acquire()`` / ``release()``: hold ``<folder>/.lock`` exclusively.

    ``acquire`` fails at once (no waiting) with ``FolderLocked`` naming the holder."""

    def __init__(self, folder: str | os.PathLike, purpose: str = "in use") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.purpose = purpose
        self._file: IO[str] | None = None

    def acquire(self) -> "FolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        # "a+": never truncate before holding the lock, or a loser would erase the holder's name from the file
        f = open(self.path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "(no holder recorded yet)"
            f.close()
            raise FolderLocked(f"{self.folder} is {self.purpose} by another process: {holder} (lock {self.path}; "
                               f"it is released when that process ends)") from None
        except OSError as e:
            f.close()
            raise OSError(f"cannot lock {self.path} ({e}): does this file system support flock?") from e
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            # The file stays: unlinking it would let a third process lock a new inode while a second still waits
            # on the old one. Closing drops the lock.
            self._file.close()
            self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def waiting_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive flock on file ``path`` for a short read-modify-write, waiting for other holders (several
    writers of one folder taking turns, e.g. every rank merging into one index)."""
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
