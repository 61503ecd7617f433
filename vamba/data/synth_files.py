"""Which files of a ``vamba data synth`` output folder belong to the generator, and removing only those.

The rule, so that rerunning synth on its own output works and nothing of the user's is ever deleted:

- the manifest lists only the files this run wrote (what appeared under the folder during the run), each with its
  size and SHA-256;
- a rerun deletes a listed file only if it resolves inside the folder, is a regular file (not a link, not a folder)
  and still has the recorded size and hash: a hand-edited manifest (``../victim.txt``) or a file the user changed
  since is left alone;
- a non-empty folder with no manifest, or a file that is not ours where the generator writes (``videos/``,
  ``captions.jsonl``, ...), is refused unless the user passes ``overwrite=true``;
- while a run writes, ``.synth-partial.json`` names the files that were there before it (the user's): a rerun after
  an interruption deletes the files the interrupted run wrote (those not named, where the generator writes) and
  starts again, without asking for ``overwrite``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from vamba.utils.io import atomic_write_json
from vamba.utils.logging import get_logger

logger = get_logger(__name__)

MANIFEST = "manifest.json"
PARTIAL = ".synth-partial.json"
# Every top-level name the generator writes (files, or folders it writes into): a user's file there would be
# overwritten (and ``hf_captions/`` is replaced whole).
OUTPUTS = ("videos", "images", "captions.jsonl", "captions.parquet", "captions-000000.tar", "hf_captions",
           "llava_video.json", "llava_image.json", "mixture.yaml", "lvbench", "videomme", "tokenizer", MANIFEST)


class OutputFolderInUse(ValueError):
    """The output folder holds files the generator did not write, where it would write."""


def file_record(path: Path) -> dict[str, int | str]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


Snapshot = dict[str, tuple[int, int, int]]  # relative name -> (inode, size, mtime in ns)


def existing_files(out: Path) -> Snapshot:
    """Every file (or link) under ``out``, relative, with what tells a rewritten file; links are never followed."""
    found = {}
    for folder, dirs, files in os.walk(out):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            st = os.lstat(os.path.join(folder, name))
            found[os.path.relpath(os.path.join(folder, name), out)] = (st.st_ino, st.st_size, st.st_mtime_ns)
    found.pop(PARTIAL, None)
    return found


def written_files(out: Path, before: Snapshot) -> dict[str, dict[str, int | str]]:
    """The files the run wrote, with their records: regular files under ``out`` that were not there when it began
    (``before``), or that were and have been rewritten since (``overwrite=true`` replaced them)."""
    now = existing_files(out)
    return {name: file_record(out / name) for name in sorted(now)
            if name not in (MANIFEST, PARTIAL) and before.get(name) != now[name] and (out / name).is_file()
            and not (out / name).is_symlink()}


def _removable(out: Path, name: str, record: dict | None) -> str | None:
    """Why ``name`` (listed in the old manifest) must be kept, or None when it is ours to delete."""
    path = out / name
    root = out.resolve()
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return "outside the output folder"
    if os.path.isabs(name) or ".." in Path(name).parts:
        return "not a plain relative name"
    if path.is_symlink() or not path.is_file():
        return "not a regular file"
    if record is None:  # a manifest from before records were kept: only names the generator writes
        return None if Path(name).parts[0] in OUTPUTS else "not a name the generator writes"
    if file_record(path) != record:
        return "changed since synth wrote it"
    return None


def remove_previous(out: Path) -> None:
    """Delete the files the previous run's manifest lists, and only those that pass ``_removable`` (the others are
    kept, with a warning naming them), then the manifest itself. Folders emptied on the way are removed."""
    manifest = out / MANIFEST
    if not manifest.is_file():
        return
    try:
        listed = json.loads(manifest.read_text()).get("files", [])
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise OutputFolderInUse(f"{manifest} is not a synth manifest ({e}); move it away or pass overwrite=true") \
            from None
    # current manifests: {name: {size, sha256}}; older ones: [name, ...]
    records = listed if isinstance(listed, dict) else {name: None for name in listed if isinstance(name, str)}
    for name, record in records.items():
        if not (out / name).exists() and not (out / name).is_symlink():
            continue
        reason = _removable(out, name, record)
        if reason is None:
            (out / name).unlink()
        else:
            logger.warning("synth: keeping %s listed in the old manifest: %s", out / name, reason)
    manifest.unlink()
    for folder, _, _ in sorted(os.walk(out), key=lambda w: -len(w[0])):  # deepest first
        if Path(folder) != out and not os.path.islink(folder) and not os.listdir(folder):
            os.rmdir(folder)


def _remove_partial(out: Path) -> None:
    """Delete what an interrupted run wrote: regular files where the generator writes that its ``PARTIAL`` record
    does not name as present before it."""
    try:
        kept = set(json.loads((out / PARTIAL).read_text())["before"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise OutputFolderInUse(f"{out / PARTIAL} is unreadable ({e}); move it away or pass overwrite=true") from None
    for name in existing_files(out):
        path = out / name
        if (name not in kept and name != MANIFEST and Path(name).parts[0] in OUTPUTS and path.is_file()
                and not path.is_symlink()):
            path.unlink()
    logger.info("synth: removed the files of an interrupted run in %s", out)


def prepare(out: Path, overwrite: bool) -> Snapshot:
    """Make ``out`` ready for a run: remove the previous (or interrupted) run's files, then refuse, without
    ``overwrite``, a folder that still holds files where the generator writes, or any file at all when no synth run
    wrote there. Records the files present before the run (the user's) in ``PARTIAL`` until ``finish`` and returns
    them: the new manifest does not list them."""
    out.mkdir(parents=True, exist_ok=True)
    ours = (out / MANIFEST).is_file() or (out / PARTIAL).is_file()
    if (out / PARTIAL).is_file():
        _remove_partial(out)
    if (out / MANIFEST).is_file():
        remove_previous(out)
    present = existing_files(out)
    if not overwrite:
        if not ours and present:
            raise OutputFolderInUse(
                f"{out} is not empty and holds no synth manifest ({_some(present)}): choose an empty or new out, "
                f"or pass overwrite=true to write into it (files of the same names are then replaced)")
        clashes = {name for name in present if Path(name).parts[0] in OUTPUTS}
        if clashes:
            raise OutputFolderInUse(
                f"{out} holds files synth did not write (or that changed since) where it writes: {_some(clashes)}; "
                f"move them away or pass overwrite=true to replace them")
    atomic_write_json(out / PARTIAL, {"before": sorted(present)})
    return present


def finish(out: Path) -> None:
    """The manifest is written: the run is complete."""
    (out / PARTIAL).unlink(missing_ok=True)


def _some(names, n: int = 5) -> str:
    shown = sorted(names)[:n]
    return ", ".join(shown) + (f" and {len(names) - n} more" if len(names) > n else "")
