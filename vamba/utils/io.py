"""Writes that never leave a half-written file behind (a killed run keeps what it had)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable


def current_umask() -> int:
    """The process's umask. Read from /proc (Linux) rather than with ``os.umask(0)`` and back: that would leave, for
    an instant, every other thread creating files with no umask at all."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def chmod_like_created(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a file made by ``mkstemp`` (always 0600) or a folder made by ``mkdtemp`` (0700) the mode that ``open`` /
    ``mkdir`` would have: 0666 / 0777 less the umask, so that a group-shared run directory stays readable."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk: without this a power loss can undo the rename."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and an atomic rename (file and folder
    flushed to disk; the file's mode follows the umask as a plain ``open`` would)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        chmod_like_created(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def append_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Append records, one JSON line each, flushed and synced so a crash loses at most a partial last line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file, ignoring a torn last line (left by a crash mid-write)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # torn final write
            raise ValueError(f"{path}:{i + 1}: not valid JSON") from None
    return records


# safetensors' own reader refuses headers over 100 MB; a header is read whole into memory, so the same bound here
# keeps a crafted length (up to 2**64) from becoming one huge read.
SAFETENSORS_MAX_HEADER_BYTES = 100_000_000


def safetensors_header(path: str | os.PathLike, max_header_bytes: int = SAFETENSORS_MAX_HEADER_BYTES) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, data_offsets), after checking that
    the file holds every byte the header describes. safetensors' own message for a cut file ("incomplete
    metadata, file not fully covered") names neither the file nor the cause; this one names both.

    Raises ``ValueError`` for an empty, truncated or malformed file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is truncated ({size} bytes): not a complete safetensors file (an interrupted "
                             f"write or copy?)")
        n = int.from_bytes(head, "little")
        if n > max_header_bytes:
            raise ValueError(f"{path} is not a safetensors file we read: its header announces {n} bytes "
                             f"(more than {max_header_bytes})")
        if 8 + n > size:
            raise ValueError(f"{path} is truncated ({size} bytes): its header alone announces {8 + n} bytes (an "
                             f"interrupted write or copy?)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a safetensors file (unreadable header: {e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file (its header is not a JSON object)")
    for key, entry in header.items():
        if key != "__metadata__":
            _check_tensor_entry(path, key, entry)
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise ValueError(f"{path} is truncated ({size} bytes, its header describes {8 + n + end}): an interrupted "
                         f"write or copy?")
    return header


def _check_tensor_entry(path: Path, key: str, entry: Any) -> None:
    """One tensor of a safetensors header must be ``{"dtype": str, "shape": [int...], "data_offsets": [begin, end]}``:
    a header of valid JSON but another shape (a hand-edited or foreign file) would otherwise surface as a bare
    ``TypeError`` / ``KeyError`` far from the file."""
    def bad(what: str) -> ValueError:
        return ValueError(f"{path} is not a valid safetensors file: header entry {key!r} {what}")

    if not isinstance(entry, dict):
        raise bad(f"is {type(entry).__name__}, not an object with dtype, shape and data_offsets")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in entry]
    if missing:
        raise bad(f"has no {', '.join(missing)}")
    if not isinstance(entry["dtype"], str):
        raise bad(f"has dtype {entry['dtype']!r}, not a string")
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise bad(f"has shape {shape!r}, not a list of sizes")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise bad(f"has data_offsets {offsets!r}, not [begin, end] with 0 <= begin <= end")


def read_checkpoint_json(path: str | os.PathLike, name: str, hub_kwargs: dict[str, Any] | None = None
                         ) -> dict[str, Any] | None:
    """The JSON object in file ``name`` of a checkpoint: directory ``path``, or a hub model id read through
    transformers' cache (``hub_kwargs``: cache_dir, revision, token, ...). None when the checkpoint has no such file.

    Raises ``FileNotFoundError`` when ``path`` is a file or a path (absolute, ``./``, or with more than one ``/``)
    that does not exist, and ``ValueError`` naming the file when it is not a JSON object."""
    path = os.fspath(path)
    if os.path.isdir(path):
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            return None
    elif os.path.exists(path) or os.path.isabs(path) or path.startswith(".") or path.count("/") > 1:
        raise FileNotFoundError(f"{path}: not a checkpoint directory" + ("" if os.path.exists(path) else
                                                                         " (no such directory)"))
    else:
        from transformers.utils import cached_file

        file = cached_file(path, name, _raise_exceptions_for_missing_entries=False, **(hub_kwargs or {}))
        if file is None:
            return None
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file}: not a readable JSON file ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a JSON object")
    return data
