"""Confining paths read from untrusted files (dataset rows, benchmark annotations) to a root folder."""
from __future__ import annotations

import os


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path`` (absolute, or relative to the working directory) lies in ``root`` or below it.

    Lexical, on absolute normalised paths: ``..`` components and absolute paths that leave ``root`` are caught,
    while symbolic links inside ``root`` are followed as the operator set them up (a data folder that links to
    another disk stays usable). The threat is a row that names ``/etc/passwd`` or ``../../secret``; whoever can
    create links inside the media root already controls what it holds.
    """
    full = os.path.normpath(os.path.abspath(path))
    base = os.path.normpath(os.path.abspath(root))
    return full == base or full.startswith(base.rstrip(os.sep) + os.sep)
