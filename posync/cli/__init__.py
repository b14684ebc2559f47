"""The ``posync`` command: the demo, migrations, and management of a running outlet.

Management commands need the host's wiring: ``--app module:function`` (or ``POSYNC_APP``) names a
function that returns a ``posync.Posync`` (``posync/cli/host.py``). They print tables for people, or one
JSON document with ``--json`` (``posync/cli/render.py``); ``status``, ``sync`` and ``trigger`` end with the
exit codes of ``posync/cli/exits.py``. Run as a command, posync logs to stderr only (``posync: <message>``,
warnings by default, ``posync -v ...`` for INFO: ``posync/cli/stderr_log.py``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import typer

from posync.cli import manage
from posync.cli.config import config_app
from posync.cli.exits import EXIT_CODES, for_error
from posync.cli.photos import photos_app
from posync.cli.render import JsonOption, print_json, print_rows
from posync.cli.stderr_log import command_logging, configure_logging, verbose_configured
from posync.cli.sync import sync_command, trigger_command
from posync.errors import PosyncError

__all__ = ["main"]

app = typer.Typer(help="posync: offline-first sync for point-of-sale outlets.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="posync's own tables (Alembic, version table posync_alembic_version).")
app.add_typer(db_app, name="db")
app.add_typer(photos_app, name="photos", help="Product photos from HO to the edge store (posync.photos).")
app.add_typer(config_app, name="config")

DEMO_NEEDS = ("starlette", "uvicorn", "jwt", "urllib3")  # the extra "demo": server + photos


@app.callback()
def _process(verbose: bool = typer.Option(False, "--verbose", "-v", help="log INFO too (on stderr; stdout is "
                                                                         "the table or the JSON)")) -> None:
    configure_logging(verbose=verbose)


@app.command()
def demo(data_dir: Path = typer.Option(None, help="where to keep the demo databases (default: a temp dir)"),
         verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Offline writes, a sync, and one conflict of each strategy, on embedded SQLite + reference HO."""
    missing = [m for m in DEMO_NEEDS if importlib.util.find_spec(m) is None]
    if missing:  # a plain `pip install posync`: say which extra, not a traceback
        typer.echo(f"posync demo runs a reference head office and the photo engines ({', '.join(missing)} "
                   "missing): pip install 'posync[demo]'", err=True)
        raise typer.Exit(2)
    # the story shows its deliberate outage itself: its warnings would repeat it
    configure_logging(level=logging.INFO if verbose or verbose_configured() else logging.ERROR)
    from posync.cli.photos import _bar
    from posync.demo.run import run_demo

    with _bar(sys.stdout.isatty()) as progress:  # the photos' progress bar, on a terminal
        figures = run_demo(data_dir, progress=progress, show_status=manage.show_status)
    if not figures.get("converged") or figures.get("open_conflicts") or not figures.get("healthy"):
        raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade(url: str = typer.Option(..., envvar="POSYNC_DB_URL", help="SQLAlchemy URL of the outlet database"),
               revision: str = "head") -> None:
    """Create or upgrade posync's tables (idempotent)."""
    from posync.db import create_engine
    from posync.migrations import current, upgrade

    engine = create_engine(url)
    try:
        upgrade(engine, revision)
        typer.echo(f"posync tables at revision {current(engine)}")
    finally:
        engine.dispose()


@db_app.command("rebind")
def db_rebind(url: str = typer.Option(..., envvar="POSYNC_DB_URL", help="SQLAlchemy URL of the outlet database"),
              yes: bool = typer.Option(False, "--yes", help="confirm: queued changes go to HO as this outlet"),
              as_json: bool = JsonOption) -> None:
    """Bind the database to the outlet POSYNC_* settings name (outlet, company, store, HO), on purpose."""
    from posync.app import outlet_identity, rebind_outlet
    from posync.db import create_engine
    from posync.settings import PosyncSettings

    if not yes:
        raise typer.BadParameter("re-binding sends this database's queued changes as another outlet: add --yes")
    settings = PosyncSettings()
    engine = create_engine(url)
    try:
        before = rebind_outlet(engine, settings)
    finally:
        engine.dispose()
    was, now = (before._asdict() if before else None), outlet_identity(settings)._asdict()
    if as_json:
        print_json({"before": was, "now": now})
        return
    print_rows([{"field": name, "before": (was or {}).get(name), "now": value} for name, value in now.items()],
               ["field", "before", "now"], title="outlet binding" + ("" if was else " (none before)"))


COMMANDS: list[tuple[Callable[..., None], str]] = [
    (manage.status, "status"), (sync_command, "sync"), (trigger_command, "trigger"), (manage.queue, "queue"),
    (manage.logs, "logs"), (manage.conflicts, "conflicts"), (manage.checkpoints, "checkpoints"),
    (manage.retry, "retry"), (manage.resolve, "resolve"), (manage.reset_checkpoint, "reset-checkpoint"),
    (manage.reconcile, "reconcile")]
for command, name in COMMANDS:
    app.command(name, epilog=EXIT_CODES if name in ("status", "sync", "trigger") else None)(command)


def main(argv: list[str] | None = None) -> None:
    """The ``posync`` command (``argv``: its arguments, default the process's)."""
    try:
        with command_logging():
            app(args=argv, prog_name="posync")
    except PosyncError as exc:  # a command outside the management ones (db, demo): still its exit code
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(for_error(exc)) from None


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
