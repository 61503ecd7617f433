"""Files written by vamba.utils.io: modes that follow the umask, safetensors headers checked (issue 28, item 11 and
"smaller"; docs/reliability.md)."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from vamba.utils.io import atomic_write_text, safetensors_header


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """mkstemp creates 0600: every config.yaml, run_info.json and result written atomically was private to its
    owner whatever the umask (a group sharing a run directory could not read it)."""
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == mode


@pytest.mark.parametrize("header, what", [
    ({"w": [1, 2]}, "'w' is list, not an object"),
    ({"w": {"dtype": "F32", "shape": [2]}}, "'w' has no data_offsets"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": "0-8"}}, "'w' has data_offsets '0-8'"),
    ({"w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}}, "'w' has shape \\['2'\\]"),
])
def test_a_safetensors_header_of_another_shape_is_an_error_naming_the_file(tmp_path: Path, header, what) -> None:
    """Before: valid JSON of the wrong shape raised a bare TypeError / KeyError naming no file."""
    path = tmp_path / "model.safetensors"
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(8))
    with pytest.raises(ValueError, match=f"{path} is not a valid safetensors file: header entry {what}"):
        safetensors_header(path)
