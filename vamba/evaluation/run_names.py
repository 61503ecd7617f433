"""Which model an evaluation run holds, and the default directory it goes to.

Every ``vamba train`` output ends in ``final``, so a run directory named after the checkpoint's basename would
put two trained models in one place. The default directory is named after the checkpoint's parent and its name
(``runs/train/init_sa/final`` -> ``init_sa-final``), and ``run.json`` records the model's identity: its resolved
path and a fingerprint of its files. When the default directory already holds another model (another checkpoint
with the same two names, or the same path retrained since), the run goes to the first of ``<name>-2``,
``<name>-3``, ... that holds this model or nothing yet: a restart finds its own directory again, and no run of
another model is refused, resumed into or overwritten. An explicit ``out=`` is taken as given (a different model
there is refused by the settings check).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def fingerprint(path: Path) -> str | None:
    """A cheap identity of a checkpoint's contents: sha256 over (name, size, mtime) of its top-level files (a file:
    of itself). Retraining into the same directory, or another copy, changes it; reading the weights is not needed.
    ``None`` when ``path`` does not exist locally (e.g. a Hugging Face hub id)."""
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
    else:
        return None
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        digest.update(f"{f.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def model_identity(path: str) -> dict[str, Any]:
    """``{"name", "path", "fingerprint"}`` of the model (checkpoint directory, hub id or replayed responses file).

    ``name`` is readable and path-safe: the parent's and the checkpoint's names (``init_sa-final``); for a hub id
    ``org/model`` that is ``org-model``.
    """
    local = Path(path).expanduser()
    if local.exists():
        resolved = local.resolve()
        parts = [resolved.parent.name, resolved.name] if resolved.parent.name else [resolved.name]
        shown = str(resolved)
    else:  # a hub id or a path that is not here: keep it as given
        parts = [p for p in Path(path).parts[-2:] if p not in ("/", "")]
        shown = path
    name = _UNSAFE.sub("_", "-".join(parts)).strip("-_") or "model"
    return {"name": name, "path": shown, "fingerprint": fingerprint(local)}


def holds_other_model(run_dir: Path, identity: dict[str, Any]) -> bool:
    """True when ``run_dir`` records a run of a model other than ``identity`` (or records none we can read)."""
    run_json = run_dir / "run.json"
    if not run_json.is_file():
        return False  # nothing recorded yet: free to use
    try:
        recorded = json.loads(run_json.read_text()).get("model_id")
    except json.JSONDecodeError:
        return True
    if not isinstance(recorded, dict):
        return True  # a run recorded before model identities: not known to be this model
    return (recorded.get("path"), recorded.get("fingerprint")) != (identity["path"], identity["fingerprint"])


def default_run_dir(parent: Path, identity: dict[str, Any]) -> Path:
    """``parent/<name>``, or the first ``parent/<name>-<k>`` (k = 2, 3, ...) that holds this model or no run."""
    base = parent / identity["name"]
    candidate, k = base, 1
    while holds_other_model(candidate, identity):
        k += 1
        candidate = parent / f"{identity['name']}-{k}"
    return candidate


__all__ = ["default_run_dir", "fingerprint", "holds_other_model", "model_identity"]
