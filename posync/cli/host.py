"""The host's ``Posync`` for a management command: ``--app module:function`` (or ``POSYNC_APP``) names a
function of the host's that builds one, wired as its app wires it. Each command builds one, runs, closes it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from posync.cli.exits import for_error
from posync.errors import PosyncError

__all__ = ["AppOption", "fail", "load", "open_posync"]

AppOption = typer.Option(None, "--app", envvar="POSYNC_APP", help="module:function returning a posync.Posync")


def load(spec: str | None) -> Any:
    """Call the host's ``module:function``. The current directory is importable, as for ``python -m``."""
    if not spec or ":" not in spec:
        raise typer.BadParameter("give --app module:function (or set POSYNC_APP)")
    module, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        build = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise typer.BadParameter(f"--app {spec}: {exc}") from None
    return build()


def fail(exc: PosyncError) -> typer.Exit:
    """Say what went wrong on stderr (posync's messages hold no secret) and give the exit code for it."""
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(for_error(exc))


@contextmanager
def open_posync(spec: str | None) -> Iterator[Any]:
    """The host's Posync for the length of a command; a posync error ends the command with its exit code."""
    try:
        sync = load(spec)
    except PosyncError as exc:  # bad settings in the host's function: a ConfigurationError, exit 2
        raise fail(exc) from None
    try:
        yield sync
    except PosyncError as exc:
        raise fail(exc) from None
    finally:
        sync.close()
