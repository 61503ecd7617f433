"""Project logger and once-only messages (a kernel choice is worth one line, not one per layer)."""
from __future__ import annotations

import logging

_seen: set[str] = set()


def get_logger(name: str) -> logging.Logger:
    """A logger under the ``vamba`` hierarchy; one stderr handler is attached to the root ``vamba`` logger."""
    root = logging.getLogger("vamba")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s %(levelname)s %(name)s] %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    return logging.getLogger(name if name.startswith("vamba") else f"vamba.{name}")


def log_once(logger: logging.Logger, message: str, level: int = logging.INFO) -> None:
    """Log ``message`` the first time it is seen in this process."""
    if message not in _seen:
        _seen.add(message)
        logger.log(level, message)
