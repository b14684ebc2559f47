"""The ``posync`` command's own logging. Run as a command, posync is the application, so it configures
logging for its process: one handler on stderr, warnings and errors by default (``-v``: INFO too), each
line ``posync: <message>``. stdout stays the table or the JSON document, for a pipe.

``command_logging()`` puts the root logger back as it was when the command ends (``posync.cli.main``
called in a process that has its own logging, a test's included).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["command_logging", "configure_logging", "verbose_configured"]


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (a redirected or captured stream too)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always the current sys.stderr


class _ShortFormatter(logging.Formatter):
    """``posync: <message>``; a library's record (httpx with -v) names its logger."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        source = record.name.partition(".")[0]
        return f"posync: {message}" if source == "posync" else f"posync: {source}: {message}"


def configure_logging(*, verbose: bool = False, level: int | None = None) -> None:
    """One stderr handler on the root logger (replacing one set before), at WARNING, INFO when
    ``verbose``, or ``level``."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_ShortFormatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level if level is not None else logging.INFO if verbose else logging.WARNING)


def verbose_configured() -> bool:
    """Whether the command's logging shows INFO already (``posync -v demo``)."""
    root = logging.getLogger()
    return any(isinstance(h, _StderrHandler) for h in root.handlers) and root.level <= logging.INFO


@contextmanager
def command_logging() -> Iterator[None]:
    """The root logger's handlers and level as they were, once the command is done."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)
