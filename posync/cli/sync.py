"""``posync sync`` (and ``posync trigger``, its older name): a sync cycle now, from a shell.

One syncer per outlet database: when another process of the outlet holds the syncer lease (the POS's
server, running its scheduler), that process is asked for the cycle through the database and the command
waits for it (``--wait``); else the cycle runs here (``Posync.sync_here_or_ask()``), with a live line on a
terminal: pushed and pulled so far. Then the result, as a table or ``--json``, and an exit code: 0 done,
1 the cycle failed otherwise (or a resource failed alone), 3 HO unavailable (no answer, or its 5xx or 429),
4 credentials refused. A cycle is judged by its own failure, not by asking HO again afterwards: HO that
failed the push and answers a moment later was still unavailable. Run here, that is ``CycleReport.error_kind``;
run by the outlet's syncer, the kind it recorded with the cycle (``posync_outlet.last_error_kind``), and
what the cycle moved and how long it took come from its record in the sync log. The syncer runs with its
own settings (HO, credentials), not this process's: the table says so.
"""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

import typer

from posync.cli import exits
from posync.cli.host import AppOption, open_posync
from posync.cli.render import JsonOption, console, print_fields, print_json

__all__ = ["sync_command", "trigger_command"]

POLL = 0.25  # seconds between two looks at the progress (or at the syncer's cycle)

WaitOption = typer.Option(60.0, "--wait", min=0.0, help="when the outlet's syncer is another process: how long to "
                                                        "wait for the cycle it is asked for (seconds)")


def sync_command(app_spec: str = AppOption, as_json: bool = JsonOption,
                 progress: bool = typer.Option(True, "--progress/--no-progress", help="a live line on a terminal"),
                 wait: float = WaitOption) -> None:
    """Run a sync cycle now (push, pull, push), where the outlet syncs; print what it did."""
    _sync(app_spec, as_json=as_json, progress=progress, wait=wait, title="posync sync")


def trigger_command(app_spec: str = AppOption, as_json: bool = JsonOption, wait: float = WaitOption) -> None:
    """A sync cycle now ("posync sync" without the live line; seed 003's name)."""
    _sync(app_spec, as_json=as_json, progress=False, wait=wait, title="posync trigger")


def _sync(app_spec: str | None, *, as_json: bool, progress: bool, wait: float, title: str) -> None:
    with open_posync(app_spec) as sync:
        holder = _syncer_elsewhere(sync)
        if holder is not None:
            result = _ask(sync, holder, wait, progress)
        else:
            started = time.monotonic()
            report = _run_here(sync, progress)
            if report is not None:
                result = _result(report)
                result["seconds"] = round(time.monotonic() - started, 3)
            else:  # another worker took the lease meanwhile: it was asked
                result = _ask(sync, "another worker", wait, progress)
        code = _exit_code(result)
    if as_json:
        print_json(result)
    else:
        _show(result, title)
    raise typer.Exit(code)


def _syncer_elsewhere(sync: Any) -> str | None:
    """The live holder of the outlet's syncer lease, when it is another process than this one."""
    if not sync.settings.single_syncer:
        return None
    from posync.repositories.lease import LeaseRepository

    with sync.engine.connect() as conn:
        state = LeaseRepository().state(conn, "syncer")
    if state is None or state.holder is None or state.expires_at <= time.time():
        return None
    return str(state.holder)


def _run_here(sync: Any, progress: bool) -> Any:
    """The cycle on a thread, and on a terminal a live line of what it did so far (from the sync log)."""
    out = console(stderr=True)
    if not (progress and out.is_terminal):
        return sync.sync_here_or_ask()
    done: dict[str, Any] = {}

    def run() -> None:
        try:
            done["report"] = sync.sync_here_or_ask()
        except BaseException as exc:  # raised again on the command's thread
            done["error"] = exc

    started = datetime.now(UTC)
    thread = threading.Thread(target=run, name="posync-cli-sync", daemon=True)
    with out.status("syncing…") as line:
        thread.start()
        while thread.is_alive():
            thread.join(POLL)
            pushed, pulled = _so_far(sync, started)
            line.update(f"syncing… pushed {pushed}, pulled {pulled} "
                        f"({(datetime.now(UTC) - started).total_seconds():.0f}s)")
    if "error" in done:
        raise done["error"]
    return done.get("report")


def _so_far(sync: Any, since: datetime) -> tuple[int, int]:
    """Changes pushed and records pulled since ``since``, from the sync log's newest rows."""
    pushed = pulled = 0
    try:
        rows = sync.manager.logs(200)
    except Exception:  # the database is busy: the line waits for the next look
        return pushed, pulled
    for row in rows:
        at = row.get("at")
        if not at or datetime.fromisoformat(at) < since:
            break
        if row.get("kind") == "push":
            pushed += row.get("count") or 0
        elif row.get("kind") == "pull":
            pulled += row.get("count") or 0
    return pushed, pulled


def _ask(sync: Any, holder: str, wait: float, progress: bool) -> dict[str, Any]:
    """Ask the outlet's syncer for a cycle through the database; wait (bounded) until it has recorded one."""
    from posync.workers.leader import SyncerLease

    mark = sync.manager.log_mark()  # the cycle reported is the first one recorded after the ask
    asked = time.monotonic()
    SyncerLease(sync.engine, "posync-cli").ask_for_cycle()
    out = console(stderr=True)
    cycle = None
    line = out.status(f"asked the outlet's syncer ({holder}) for a cycle…")
    with line if progress and out.is_terminal else nullcontext():
        while time.monotonic() - asked < wait:
            cycle = sync.manager.cycle_after(mark)
            if cycle is not None:
                break
            time.sleep(POLL)
    # what the syncer records of a cycle: the changes it moved (pushed and pulled together), its duration
    result: dict[str, Any] = {"ran": cycle is not None, "where": "syncer", "syncer": holder, "pushed": None,
                              "pulled": None, "moved": None, "deleted": None, "conflicts": None, "failed": {},
                              "error": None, "error_kind": None, "seconds": None,
                              "waited": round(time.monotonic() - asked, 3)}
    if cycle is None:
        result["error"] = f"the outlet's syncer ({holder}) was asked for a cycle; none was recorded in {wait:g}s"
    else:
        result.update(moved=cycle.moved, error=cycle.error, error_kind=cycle.error_kind,
                      seconds=None if cycle.seconds is None else round(cycle.seconds, 3))
    return result


def _result(report: Any) -> dict[str, Any]:
    pushed, pulled, deleted = report.push.applied, report.pull.applied.written, report.pull.applied.deleted
    return {"ran": report.ran, "where": "here", "syncer": None, "pushed": pushed, "pulled": pulled,
            "moved": pushed + pulled + deleted, "deleted": deleted + report.removed,
            "conflicts": report.push.conflicts + report.pull.applied.conflicts,
            "failed": {**report.pull.failed, **report.reconcile_failed}, "error": report.error,
            "error_kind": report.error_kind, "seconds": None, "waited": None}


def _exit_code(result: dict[str, Any]) -> int:
    """0 done; 3 or 4 when the cycle failed because HO was unavailable or refused us; 1 for any other
    failure, a resource that failed alone included, and a syncer that recorded no cycle in time. Judged by
    the cycle's own failure, wherever it ran: never by asking HO again afterwards."""
    if result["error"] is None and result["ran"]:
        return exits.ERROR if result["failed"] else exits.OK
    if not result["ran"] and result["where"] == "syncer":
        return exits.ERROR  # the syncer did not answer in time
    return {"auth": exits.AUTH_REFUSED, "unavailable": exits.HO_UNREACHABLE}.get(result["error_kind"] or "",
                                                                                exits.ERROR)


def _show(result: dict[str, Any], title: str) -> None:
    where = "here" if result["where"] == "here" else f"by the outlet's syncer ({result['syncer']})"
    rows: list[tuple[str, Any]] = [("ran", f"{'yes' if result['ran'] else 'no'}, {where}")]
    if result["where"] == "syncer":  # its HO and credentials, not this process's (POSYNC_* here changed nothing)
        rows.append(("settings", "the syncer's own (HO, credentials): this process's were not used"))
    for key in ("pushed", "pulled", "moved", "deleted", "conflicts"):
        if result[key] is not None:
            rows.append((key, result[key]))
    rows += [(f"failed: {resource}", error) for resource, error in result["failed"].items()]
    if result["error"]:  # named by its kind when the cycle knows it
        kind = {"unavailable": "HO unavailable", "auth": "credentials refused"}.get(result["error_kind"] or "")
        rows.append((kind or "error", result["error"]))
    if result["seconds"] is not None:
        rows.append(("took", f"{result['seconds']:.2f}s"))
    if result["waited"] is not None:
        rows.append(("waited", f"{result['waited']:.2f}s"))
    print_fields(rows, title=title)
