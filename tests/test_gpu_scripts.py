"""The GPU scripts install wheels into a private folder, never a fixed world-writable /tmp path on PYTHONPATH."""
from __future__ import annotations

import re
from pathlib import Path

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts" / "gpu").glob("*.sh"))


def test_installs_go_to_a_private_folder() -> None:
    assert SCRIPTS
    for script in SCRIPTS:
        text = script.read_text()
        assert not re.search(r"--target\s+/tmp/", text), script.name
        if "--target" in text:
            assert 'SITE=$(mktemp -d)' in text and '--target "$SITE"' in text, script.name
