"""The Python examples of the docs, as printed, for the tests that run them (README.md's and docs/*.md's)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_example(page: str, containing: str) -> str:
    """The first ```python block of ``page`` (a path from the repository's root) that contains ``containing``."""
    blocks = re.findall(r"```python\n(.+?)\n```", (ROOT / page).read_text(), flags=re.S)
    return next(b for b in blocks if containing in b)
