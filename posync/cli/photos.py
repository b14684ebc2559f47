"""``posync photos ...``: sync, reconcile and status, from flags or ``POSYNC_*`` variables.

    posync photos sync --ho-url http://ho:8002 --username u --password p --company-id C --store-id S \\
        --api v1 --store fs:/var/lib/pos/photos --db-url sqlite:///pos.db
    posync photos sync --store s3://product-images --s3-endpoint edge_minio:9000 --s3-access-key ...
    posync photos reconcile [--product ID] [--fix]
    posync photos status

``photos_app`` is a typer app for the core CLI to mount (``app.add_typer(photos_app, name="photos")``);
``python -m posync.cli.photos`` runs it alone. Each command prints a short table, or one JSON document
with ``--json`` (``posync/cli/render.py``); exit codes are :data:`EXIT_CODES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import typer

from posync.cli import exits
from posync.cli.render import JsonOption, cell, counts, print_fields, print_json, print_rows
from posync.cli.stderr_log import configure_logging, verbose_configured
from posync.errors import ConfigurationError, PosyncError
from posync.services.photos.report import Progress, SyncReport

__all__ = ["EXIT_CODES", "main", "photos_app"]

EXIT_CODES = (
    "Exit codes: 0 every photo HO lists is synced (photos waiting for a product this outlet lacks do not count: "
    "they are not this run's failure and are fetched once the product arrives); 1 photos not synced, failed "
    "ones waiting for their retry included (the counts by state are printed), deletes held back by the cap, "
    "HO's listing failed or kept shifting, another pass was running, or the store or database failed; "
    "2 bad settings.")
LEGACY_DELETES = (
    "The legacy API (--api legacy, seed 000) reports no deletes: only a full check (sync --full, or the "
    "nightly job) removes photos HO deleted; status shows when it last ran (last_full_at).")

photos_app = typer.Typer(help="Product photos from head office to this outlet (issue 12).", no_args_is_help=True,
                         pretty_exceptions_enable=False, epilog=f"{EXIT_CODES}\n\n{LEGACY_DELETES}")

_FLAGS: dict[str, Any] = {}


def _opt(default: Any, *names: str, help: str) -> Any:
    return typer.Option(default, *names, help=help, show_default=False)


@photos_app.callback()
def _common(
    ho_url: str = _opt(None, "--ho-url", help="HO base URL (POSYNC_HO_URL)"),
    username: str = _opt(None, "--username", help="HO user for the JWT token endpoint (POSYNC_USERNAME)"),
    password: str = _opt(None, "--password", help="(POSYNC_PASSWORD)"),
    api_key: str = _opt(None, "--api-key", help="instead of a user: an API key (POSYNC_API_KEY)"),
    company_id: str = _opt(None, "--company-id", help="(POSYNC_COMPANY_ID)"),
    store_id: str = _opt(None, "--store-id", help="(POSYNC_STORE_ID)"),
    api: str = _opt(None, "--api", help="v1 (seed 001) or legacy (seed 000) (POSYNC_PHOTO_API)"),
    store: str = _opt(None, "--store",
                      help="fs:PATH | s3://BUCKET | db | db:table=T,key=K,column=C (POSYNC_PHOTO_STORE)"),
    db_url: str = _opt(None, "--db-url", help="the outlet database (POSYNC_DB_URL)"),
    s3_endpoint: str = _opt(None, "--s3-endpoint", help="host:port (POSYNC_PHOTO_S3_ENDPOINT)"),
    s3_access_key: str = _opt(None, "--s3-access-key", help="(POSYNC_PHOTO_S3_ACCESS_KEY)"),
    s3_secret_key: str = _opt(None, "--s3-secret-key", help="(POSYNC_PHOTO_S3_SECRET_KEY)"),
    s3_secure: bool = typer.Option(None, "--s3-secure/--s3-plain", help="HTTPS to S3 (POSYNC_PHOTO_S3_SECURE)"),
    workers: int = _opt(None, "--workers", help="parallel transfers (POSYNC_PHOTO_WORKERS)"),
    engine: str = _opt(None, "--engine", help="auto | curl | urllib3 (POSYNC_PHOTO_ENGINE)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    configure_logging(verbose=verbose or verbose_configured())  # `posync -v photos ...` too
    _FLAGS.clear()
    _FLAGS.update({k: v for k, v in {
        "ho_url": ho_url, "username": username, "password": password, "api_key": api_key, "company_id": company_id,
        "store_id": store_id, "photo_api": api, "photo_store": store, "db_url": db_url,
        "photo_s3_endpoint": s3_endpoint, "photo_s3_access_key": s3_access_key,
        "photo_s3_secret_key": s3_secret_key, "photo_s3_secure": s3_secure, "photo_workers": workers,
        "photo_engine": engine}.items() if v is not None})


def _open() -> Any:
    from posync.app.photos import build_photo_sync
    from posync.db import create_engine
    from posync.migrations import upgrade
    from posync.settings import PosyncSettings

    try:
        settings = PosyncSettings(**_FLAGS)
    except PosyncError as exc:  # a ConfigurationError: never the values given (a password)
        typer.echo(f"bad photo settings: {exc}", err=True)
        raise typer.Exit(exits.USAGE) from None
    if not settings.db_url:
        typer.echo("give --db-url (or POSYNC_DB_URL): the outlet database", err=True)
        raise typer.Exit(exits.USAGE)
    db = create_engine(settings.db_url)
    upgrade(db)
    return db, build_photo_sync(settings, engine=db)


MAX_FAILURES_SHOWN = 10  # failed photos a table lists (--json has the first 50)


def _show_pass(report: Mapping[str, Any], title: str) -> None:
    """A pass's report as a short table: what it did, the photos by state after it, and why it is not ok."""
    rows: list[tuple[str, Any]] = [
        ("ok", report.get("ok")), ("kind", "full check" if report.get("full") else "incremental"),
        ("listed", report.get("listed")),
        ("this pass", counts({k: report.get(k) for k in ("synced", "fetched", "copied", "adopted", "failed",
                                                         "requeued", "deleted")})),
        ("bytes", report.get("bytes"))]
    if report.get("states"):
        rows.append(("photos", counts(report["states"])))
    rows += [(name, report[key]) for name, key in [("deletes held", "deletes_held"), ("why held", "delete_note"),
                                                   ("listing error", "error")] if report.get(key)]
    if report.get("seconds") is not None:
        rows.append(("took", f"{report['seconds']:.2f}s"))
    print_fields(rows, title=title)
    _show_failures(report.get("failures") or [], total=report.get("failed") or 0)


def _show_failures(failures: list[dict[str, Any]], *, total: int) -> None:
    if not failures:
        return
    shown = failures[:MAX_FAILURES_SHOWN]
    columns = ["photo_id", "reason", *(["detail"] if any(f.get("detail") for f in shown) else [])]
    print_rows(shown, columns, title="failed photos")
    if total > len(shown):
        typer.echo(f"{total - len(shown)} more failed photo(s): --json lists the first 50")


def _show_reconcile(report: Mapping[str, Any]) -> None:
    plan = ("orphaned", "unjudged", "adopt", "fetch", "missing", "corrupt", "synced")
    rows: list[tuple[str, Any]] = [
        ("ok", report.get("ok")), ("product", report.get("product_id") or "all"),
        ("fixed", report.get("fixed")), ("found", counts({k: report.get(k) for k in plan}))]
    if not report.get("fixed"):
        rows.append(("a fix would", counts(report.get("fix_would"))))
    rows += [("removed", report.get("removed")), ("requeued", report.get("requeued"))]
    rows += [(name, report[key]) for name, key in [("listing error", "listing_error"), ("busy", "busy")]
             if report.get(key)]
    rows += [("error", error) for error in report.get("errors") or []]
    if report.get("pass"):
        done = report["pass"]
        rows.append(("fix's full pass", ("ok, " if done.get("ok") else "NOT ok, ")
                     + counts({k: done.get(k) for k in ("listed", "synced", "failed", "deleted")})))
    print_fields(rows, title="posync photos reconcile")
    if any(report.get(key) for key in ("orphaned_files", "adopt_files", "fetch_files", "missing_files",
                                       "corrupt_files", "unjudged_files")):
        typer.echo("--json lists the files")


def _show_status(status: Mapping[str, Any]) -> None:
    last = status.get("last_pass") or None
    rows: list[tuple[str, Any]] = [
        ("source", status.get("source")), ("store", status.get("store")), ("photos", counts(status.get("photos"))),
        ("last incremental", cell(status.get("last_incremental_at")) or "never"),
        ("last full check", cell(status.get("last_full_at")) or "never"),
        ("last pass", (f"{cell(last.get('at'))}, {'ok' if last.get('ok') else 'NOT ok'}, "
                       + counts({k: last.get(k) for k in ("listed", "synced", "failed", "deleted")}))
         if last else "never"),
        ("deletes seen by", status.get("deletes_seen_by")),
        ("schedule", counts(status.get("schedule")))]
    print_fields(rows, title="posync photos status")
    _show_failures(status.get("failures") or [], total=len(status.get("failures") or []))


@photos_app.command(epilog=LEGACY_DELETES)
def sync(full: bool = typer.Option(False, "--full", help="list everything (the nightly full check)"),
         max_deletes: int = typer.Option(None, "--max-deletes", help="allow this many deletes this run"),
         progress: bool = typer.Option(True, "--progress/--no-progress"), as_json: bool = JsonOption) -> None:
    """One pass: list HO's photos, fetch what changed, verify, commit; HO's deletes after a clean pass.
    Exits 0 when every photo HO lists is synced, 1 when any is not (failed ones waiting for their retry
    too; the counts by state are printed), deletes were held back or the listing failed, 2 on bad settings."""
    db, photo_sync = _open()
    try:
        with _bar(progress) as on_progress:
            report = photo_sync.sync(full=full, progress=on_progress, max_deletes=max_deletes)
        last_full = photo_sync.status()["last_full_at"] if photo_sync.source.name == "legacy" else None
    except PosyncError as exc:
        typer.echo(f"photo sync failed: {exc}", err=True)
        raise typer.Exit(_failure_code(exc)) from None
    finally:
        photo_sync.close()
        db.dispose()
    if as_json:
        print_json(report.as_dict())
    else:
        _show_pass(report.as_dict(), "posync photos sync")
    if photo_sync.source.name == "legacy" and not full:
        typer.echo(f"legacy API: HO's deletes are seen only by a full check (sync --full, or the nightly job); "
                   f"last full check: {last_full or 'never'}", err=True)
    if report.busy or not report.ok:
        for line in _why_not_ok(report):
            typer.echo(line, err=True)
        raise typer.Exit(exits.ERROR)


def _why_not_ok(report: SyncReport) -> list[str]:
    if report.busy:
        return ["another photo pass is running: this one did nothing"]
    lines = []
    if report.error:
        lines.append(f"HO's listing failed: {report.error}")
    if report.shifted:
        lines.append("HO's listing kept shifting under its offsets: the next pass lists again")
    if report.deletes_held:
        lines.append(f"{report.deletes_held} deletes held back: {report.delete_note}")
    if report.unsynced or report.failed:
        s = report.states
        parts = [f"{s.get('failed', 0)} failed (waiting for their retry)", f"{s.get('pending', 0)} pending",
                 f"{s.get('syncing', 0)} syncing"]
        lines.append(f"photos not synced: {', '.join(parts)}; {s.get('synced', 0)} synced, "
                     f"{s.get('waiting_product', 0)} waiting for a product")
    return lines


@photos_app.command()
def reconcile(product: str = typer.Option(None, "--product", help="one product; default: all"),
              fix: bool = typer.Option(False, "--fix", help="remove orphans, rebuild and fetch what HO lists"),
              remove_orphaned: bool = typer.Option(True, "--remove-orphaned/--keep-orphaned"),
              recreate_missing: bool = typer.Option(True, "--recreate-missing/--no-recreate-missing"),
              as_json: bool = JsonOption) -> None:
    """Check store against metadata and HO's listing (a dry run unless --fix: it says what a fix would
    adopt, fetch and remove). Only files whose key HO does not list are orphans; a file HO lists whose row
    is gone is adopted (row rebuilt, bytes kept if size and MD5 match) or fetched again. --fix then runs a
    full pass. With HO out of reach nothing is removed. Exits 0 when the check ran (whatever a dry run
    found) and a fix left the store equal to HO, 1 when HO's listing could not be read, a fix left photos
    not synced, or it could not run, 2 on bad settings."""
    db, photo_sync = _open()
    try:
        report = photo_sync.reconcile(product_id=product, fix=fix, remove_orphaned=remove_orphaned,
                                      recreate_missing=recreate_missing)
    except PosyncError as exc:
        typer.echo(f"photo reconcile failed: {exc}", err=True)
        raise typer.Exit(_failure_code(exc)) from None
    finally:
        photo_sync.close()
        db.dispose()
    if as_json:
        print_json(report.as_dict())
    else:
        _show_reconcile(report.as_dict())
    if not report.ok:
        if report.busy:
            typer.echo("a photo pass is running: nothing was checked; try again when it is done", err=True)
        if report.listing_error:
            typer.echo(f"{report.listing_error}: files no row holds were kept, not judged", err=True)
        if report.pass_report is not None:
            for line in _why_not_ok(report.pass_report):
                typer.echo(line, err=True)
        raise typer.Exit(exits.ERROR)


@photos_app.command()
def status(as_json: bool = JsonOption) -> None:
    """Photo counts by state, the last passes (last_full_at: the last full check), which passes see HO's
    deletes (deletes_seen_by) and the schedule."""
    db, photo_sync = _open()
    try:
        shown = photo_sync.status()
    finally:
        photo_sync.close()
        db.dispose()
    if as_json:
        print_json(shown)
    else:
        _show_status(shown)


def _failure_code(exc: PosyncError) -> int:
    """2 for settings that cannot work (a host table the db:table=... store does not find, met on first
    use), 1 for the rest."""
    return exits.USAGE if isinstance(exc, ConfigurationError) else exits.ERROR


class _bar:
    """rich's progress bar: photos done/total, bytes/s and ETA, on stderr and only on a terminal (stdout is
    the report, for a pipe)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn
        from rich.progress import Progress as Bar

        console = Console(stderr=True)
        if not console.is_terminal:
            return None
        self._progress = Bar(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                             TimeRemainingColumn(), transient=False, console=console)
        self._progress.start()
        self._task = self._progress.add_task("listing", total=None)
        return self.update

    def update(self, p: Progress) -> None:
        text = (f"{p.phase} {p.photos_done}/{p.photos_total} photos" if p.photos_total
                else f"{p.phase} {p.listed} listed")
        if p.failed:
            text += f", {p.failed} failed"
        self._progress.update(self._task, description=text, total=p.bytes_total or None, completed=p.bytes_done)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def main() -> None:
    photos_app()


if __name__ == "__main__":
    main()
