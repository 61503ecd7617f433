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
