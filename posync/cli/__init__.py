"""The ``posync`` command: the demo, migrations, and management of a running outlet.

Management commands need the host's wiring: ``--app module:function`` (or ``POSYNC_APP``) names a
function that returns a ``posync.Posync``. Output is JSON, for people and scripts alike.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer

from posync.cli.config import config_app
from posync.cli.photos import photos_app
from posync.errors import PosyncError

__all__ = ["main"]

app = typer.Typer(help="posync: offline-first sync for point-of-sale outlets.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="posync's own tables (Alembic, version table posync_alembic_version).")
app.add_typer(db_app, name="db")
app.add_typer(photos_app, name="photos", help="Product photos from HO to the edge store (posync.photos).")
app.add_typer(config_app, name="config")

DEMO_NEEDS = ("starlette", "uvicorn", "jwt", "urllib3")  # the extra "demo": server + photos

AppOption = typer.Option(None, "--app", envvar="POSYNC_APP", help="module:function returning a posync.Posync")


def _echo(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def _load(spec: str | None) -> Any:
    """Call the host's ``module:function``, which builds and returns its ``posync.Posync`` (its engine,
    registry and settings, as the app does). The current directory is importable, as for ``python -m``."""
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


@app.command()
def demo(data_dir: Path = typer.Option(None, help="where to keep the demo databases (default: a temp dir)"),
         verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Offline writes, a sync, and one conflict of each strategy, on embedded SQLite + reference HO."""
    missing = [m for m in DEMO_NEEDS if importlib.util.find_spec(m) is None]
    if missing:  # a plain `pip install posync`: say which extra, not a traceback
        typer.echo(f"posync demo runs a reference head office and the photo engines ({', '.join(missing)} "
                   "missing): pip install 'posync[demo]'", err=True)
        raise typer.Exit(2)
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR, format="%(levelname)s %(name)s %(message)s")
    from posync.cli.photos import _bar
    from posync.demo.run import run_demo

    with _bar(sys.stdout.isatty()) as progress:  # the photos' progress bar, on a terminal
        figures = run_demo(data_dir, progress=progress)
    if not figures.get("converged") or figures.get("open_conflicts"):
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
              yes: bool = typer.Option(False, "--yes", help="confirm: queued changes go to HO as this outlet")) -> None:
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
        _echo({"before": before._asdict() if before else None, "now": outlet_identity(settings)._asdict()})
    finally:
        engine.dispose()


@app.command()
def status(app_spec: str = AppOption) -> None:
    """Queue counts, open conflicts, last push and pull."""
    with _load(app_spec) as sync:
        _echo(sync.manager.status().as_dict())


@app.command()
def trigger(app_spec: str = AppOption) -> None:
    """Run one sync cycle now."""
    with _load(app_spec) as sync:
        report = sync.sync_now()
        _echo({"pushed": report.push.applied, "pulled": report.pull.applied.written,
               "deleted": report.pull.applied.deleted + report.removed,
               "conflicts": report.push.conflicts + report.pull.applied.conflicts,
               "failed": {**report.pull.failed, **report.reconcile_failed}, "error": report.error})


@app.command()
def queue(app_spec: str = AppOption, status_: str = typer.Option(None, "--status"), limit: int = 50) -> None:
    """The outbox (optionally only one status: pending, inflight, dead, conflict, blocked)."""
    from posync.models.enums import ItemStatus

    with _load(app_spec) as sync:
        _echo(sync.manager.queue(ItemStatus(status_) if status_ else None, limit))


@app.command()
def logs(app_spec: str = AppOption, limit: int = 50) -> None:
    with _load(app_spec) as sync:
        _echo(sync.manager.logs(limit))


@app.command()
def retry(item_id: int = typer.Argument(None), all_dead: bool = typer.Option(False, "--all"),
          app_spec: str = AppOption) -> None:
    """Retry one dead change by id, or all of them with --all."""
    with _load(app_spec) as sync:
        if all_dead:
            _echo({"retried": sync.manager.retry_all()})
        elif item_id is None:
            raise typer.BadParameter("give a queue item id or --all")
        else:
            sync.manager.retry(item_id)
            _echo({"retried": 1})


@app.command()
def conflicts(app_spec: str = AppOption) -> None:
    with _load(app_spec) as sync:
        _echo(sync.manager.conflicts())


@app.command()
def resolve(conflict_id: int, choice: str = typer.Option(..., help="local, remote, or a JSON merged record"),
            app_spec: str = AppOption) -> None:
    """Resolve a manual conflict."""
    value: Any = choice
    if choice not in ("local", "remote"):
        try:
            value = json.loads(choice)
        except ValueError as exc:
            raise typer.BadParameter("choice must be local, remote or a JSON object") from exc
    with _load(app_spec) as sync:
        sync.manager.resolve(conflict_id, value)
        _echo({"resolved": conflict_id})


@app.command("reset-checkpoint")
def reset_checkpoint(resource: str = typer.Argument(None, help="a pulled resource (default: all of them)"),
                     app_spec: str = AppOption) -> None:
    """Forget where a resource's pulls stand: the next sync reads it from HO in full."""
    with _load(app_spec) as sync:
        _echo({"reset": sync.reset_checkpoint(resource)})


@app.command()
def reconcile(resource: str = typer.Argument(None, help="a pulled resource (default: all of them)"),
              force: bool = typer.Option(False, "--force", help="run even if HO looks unchanged, and past the "
                                                                "deletion cap"),
              app_spec: str = AppOption) -> None:
    """The id reconciliation now: remove local rows HO no longer has (deletes HO never reported)."""
    with _load(app_spec) as sync:
        reports = sync.reconcile(resource, force=force)
        _echo([{"resource": r.resource, "skipped": r.skipped, "ho_ids": r.ho_ids, "removed": r.removed,
                "requests": r.requests, "error": r.error} for r in reports])


def main() -> None:
    try:
        app()
    except PosyncError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
