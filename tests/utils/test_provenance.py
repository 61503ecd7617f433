"""The one provenance header (vamba.utils.provenance.header) and that results take it from there."""
from __future__ import annotations

import datetime
import importlib.metadata
from pathlib import Path

from vamba.utils.provenance import header

PACKAGE = Path(__file__).resolve().parents[2] / "vamba"


def test_header_names_commit_date_device_and_versions(monkeypatch) -> None:
    monkeypatch.setenv("VAMBA_CODE_COMMIT", "0123abc+dirty")  # a copy of the code without .git names its commit
    head = header("cpu")
    assert list(head) == ["code_commit", "date", "device", "environment"]
    assert head["code_commit"] == "0123abc+dirty" and head["device"] == "cpu"
    assert datetime.datetime.fromisoformat(head["date"]).utcoffset() == datetime.timedelta(0)
    assert head["environment"]["versions"]["torch"] == importlib.metadata.version("torch")


def test_no_module_builds_its_own_header() -> None:
    """One key for the commit (``code_commit``), written by ``header`` only: no other module calls
    ``code_commit()`` or writes ``git_commit`` (results before 2026-12-07 keep theirs; nothing new writes it)."""
    own = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
           if p.name != "provenance.py" and ("code_commit()" in (text := p.read_text()) or '"git_commit"' in text)]
    assert own == []


def test_untracked_files_make_the_commit_dirty_only_where_code_is_read(tmp_path) -> None:
    """A clean checkout is its commit; an untracked data folder (the tutorial writes data/ and runs/ there) leaves it
    so; an untracked module under vamba/, or a changed tracked file, marks it ``+dirty``. A checkout of its own
    holding this provenance module (``code_commit`` reads the checkout the module lies in)."""
    import os
    import shutil
    import subprocess
    import sys

    import vamba.utils.provenance as provenance

    repo = tmp_path / "repo"
    for name in ("vamba/__init__.py", "vamba/utils/__init__.py"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("")
    shutil.copy(provenance.__file__, repo / "vamba" / "utils" / "provenance.py")
    (repo / "README.md").write_text("readme\n")
    (repo / ".gitignore").write_text("__pycache__/\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k != "VAMBA_CODE_COMMIT"} | {"PYTHONPATH": str(repo)}

    def commit() -> str:
        return subprocess.run([sys.executable, "-c", "from vamba.utils.provenance import code_commit; "
                               "print(code_commit())"], env=env, capture_output=True, text=True, check=True,
                              cwd=tmp_path).stdout.strip()

    assert commit() == head
    (repo / "data").mkdir()
    (repo / "data" / "clip.mp4").write_bytes(b"x")
    assert commit() == head
    (repo / "vamba" / "my_mixer.py").write_text("X = 1\n")
    assert commit() == head + "+dirty"
    (repo / "vamba" / "my_mixer.py").unlink()
    (repo / "README.md").write_text("changed\n")
    assert commit() == head + "+dirty"
