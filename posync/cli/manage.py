"""``posync status | queue | logs | conflicts | checkpoints | retry | resolve | reset-checkpoint | reconcile``:
the management API (``sync.status()``, ``sync.manager``) from a shell. Tables by default, ``--json`` for
scripts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import typer

from posync.cli import exits
from posync.cli.host import AppOption, open_posync
from posync.cli.render import JsonOption, cell, print_fields, print_json, print_rows

__all__ = ["checkpoints", "conflicts", "logs", "queue", "reconcile", "reset_checkpoint", "resolve", "retry",
           "show_status", "status"]


def status(app_spec: str = AppOption, as_json: bool = JsonOption) -> None:
    """Health first (with its reasons), HO checked live, then the queue, conflicts and the last syncs."""
    with open_posync(app_spec) as sync:
        report = sync.status(check_ho=True).as_dict()
    if as_json:
        print_json(report)
    else:
        show_status(report)
    raise typer.Exit(exits.for_status(report))


def show_status(s: Mapping[str, Any]) -> None:
    """The status as one short table: the verdict and its reasons first."""
    healthy = s.get("healthy")
    rows: list[tuple[str, Any]] = [("healthy", "yes" if healthy else "NO")]
    rows += [("reason", reason) for reason in s.get("reasons") or []]
    rows.append(("head office", _ho_line(s)))
    pending = f"{s.get('pending', 0)}"
    if s.get("oldest_pending_age_seconds") is not None:
        pending += f" (oldest {_age(s['oldest_pending_age_seconds'])})"
    rows += [("pending", pending), ("dead letters", len(s.get("dead_letters") or [])),
             ("open conflicts", s.get("open_conflicts", 0))]
    for name, key in [("last success", "last_success_at"), ("last push", "last_push_at"),
                      ("last pull", "last_pull_at"), ("last photo pass", "last_photo_pass_at")]:
        rows.append((name, cell(s.get(key)) or "never"))
    if s.get("lag_seconds") is not None:
        rows.append(("lag", _age(s["lag_seconds"])))
    if s.get("cycles") is not None:
        window = _age(s.get("window_seconds") or 0)
        rate = s.get("success_rate")
        avg = s.get("avg_duration_seconds")
        rows.append(("cycles", f"{s['cycles']} in the last {window}"
                               + (f", {rate:.0%} succeeded" if rate is not None else "")
                               + (f", {avg:.2f}s on average" if avg is not None else "")))
    if s.get("last_error"):
        rows.append(("last error", s["last_error"]))
    if s.get("capture_missing"):
        rows.append(("capture missing", ", ".join(s["capture_missing"])))
    for job, at in (s.get("next_runs") or {}).items():
        rows.append((f"next {job}", cell(at) or "-"))
    print_fields(rows, title="posync status")
    if s.get("dead_letters"):
        print_rows(s["dead_letters"], [("item_id", "item"), "resource", ("entity_id", "entity"), "attempts",
                                       ("last_error", "last error"), "at"], title="dead letters")


def _ho_line(s: Mapping[str, Any]) -> str:
    ho = s.get("ho")
    if not ho:
        return "not checked" + (f"; last cycle: credentials refused ({s['auth_error']})" if s.get("auth_error")
                                else "")
    if ho.get("auth_ok") is False:
        return f"credentials refused ({ho.get('error') or 'HTTP 401/403'})"
    if not ho.get("reachable"):
        return f"unreachable ({ho.get('error') or 'no answer'})"
    latency = ho.get("latency_ms")
    return "reachable" + (f", {latency:.0f} ms" if latency is not None else "")


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def queue(app_spec: str = AppOption, status_: str = typer.Option(None, "--status", help="pending, inflight, dead, "
                                                                 "conflict or blocked"),
          limit: int = 50, as_json: bool = JsonOption) -> None:
    """The outbox, oldest first: one line per queued change."""
    from posync.models.enums import ItemStatus

    try:
        wanted = ItemStatus(status_) if status_ else None
    except ValueError:
        raise typer.BadParameter(f"--status: one of {', '.join(s.value for s in ItemStatus)}") from None
    with open_posync(app_spec) as sync:
        rows = sync.manager.queue(wanted, limit)
    if as_json:
        print_json(rows)
        return
    print_rows(rows, ["id", "resource", ("entity_id", "entity"), "op", "status", "attempts",
                      ("changed_at", "changed"), ("last_error", "last error")], title="queue", empty="empty")


def logs(app_spec: str = AppOption, limit: int = 50, kind: str = typer.Option(None, "--kind", help="push, pull, "
                                                                             "dead, conflict, ..."),
         as_json: bool = JsonOption) -> None:
    """posync's sync log, newest first."""
    from posync.models.enums import log_kind

    try:
        wanted = log_kind(kind).value if kind else None
    except ValueError as exc:
        raise typer.BadParameter(f"--kind: {exc}") from None
    with open_posync(app_spec) as sync:
        rows = sync.manager.logs(limit, wanted)
    if as_json:
        print_json(rows)
        return
    print_rows(rows, ["at", "kind", "resource", ("entity_id", "entity"), "count", ("duration_ms", "ms"), "detail"],
               title="sync log", empty="empty")


def conflicts(app_spec: str = AppOption, all_: bool = typer.Option(False, "--all", help="resolved ones too"),
              as_json: bool = JsonOption) -> None:
    """Conflicts waiting for a manual resolution (posync resolve ID --choice ...)."""
    with open_posync(app_spec) as sync:
        rows = sync.manager.conflicts(None if all_ else "open")
    if as_json:
        print_json(rows)
        return
    print_rows(rows, ["id", "resource", ("entity_id", "entity"), "status", ("local_data", "local"),
                      ("remote_data", "HO"), ("created_at", "since")], title="conflicts", empty="none open")


def checkpoints(app_spec: str = AppOption, as_json: bool = JsonOption) -> None:
    """Where each pulled resource stands (posync reset-checkpoint reads one again in full)."""
    with open_posync(app_spec) as sync:
        rows = sync.status().checkpoints
    rows = json.loads(json.dumps(rows, default=str))
    if as_json:
        print_json(rows)
        return
    print_rows(rows, ["resource", "cursor", ("ho_version", "HO version"), ("last_pull_at", "last pull"),
                      ("last_full_resync_at", "last full read"), ("last_reconcile_at", "last reconcile")],
               title="checkpoints", empty="none yet")


def retry(item_id: int = typer.Argument(None), all_dead: bool = typer.Option(False, "--all"),
          app_spec: str = AppOption, as_json: bool = JsonOption) -> None:
    """Retry one dead change by id, or all of them with --all."""
    if not all_dead and item_id is None:
        raise typer.BadParameter("give a queue item id or --all")
    with open_posync(app_spec) as sync:
        if all_dead:
            count = sync.manager.retry_all()
            _done({"retried": count}, f"{count} dead change(s) put back in line", as_json)
            return
        was = sync.manager.retry(item_id)
    _done({"retried": 1, "was": was}, f"queue item {item_id} {_RETRIED.get(was, f'was {was}: put back in line')}",
          as_json)


# what ``retry`` did, by the status the change had (SyncManager._retry)
_RETRIED = {"dead": "was dead: put back in line, to be sent again under a new key",
            "pending": "was pending (already in line): its backoff and attempts are cleared, it goes with the next "
                       "push"}


def resolve(conflict_id: int, choice: str = typer.Option(..., help="local, remote, or a JSON merged record"),
            app_spec: str = AppOption, as_json: bool = JsonOption) -> None:
    """Resolve a manual conflict."""
    value: Any = choice
    if choice not in ("local", "remote"):
        try:
            value = json.loads(choice)
        except ValueError as exc:
            raise typer.BadParameter("choice must be local, remote or a JSON object") from exc
    with open_posync(app_spec) as sync:
        sync.manager.resolve(conflict_id, value)
    _done({"resolved": conflict_id}, f"conflict {conflict_id} resolved", as_json)


def reset_checkpoint(resource: str = typer.Argument(None, help="a pulled resource (default: all of them)"),
                     app_spec: str = AppOption, as_json: bool = JsonOption) -> None:
    """Forget where a resource's pulls stand: the next sync reads it from HO in full."""
    with open_posync(app_spec) as sync:
        reset = sync.reset_checkpoint(resource)
    _done({"reset": reset}, f"reset: {', '.join(reset) or 'nothing'}", as_json)


def reconcile(resource: str = typer.Argument(None, help="a pulled resource (default: all of them)"),
              force: bool = typer.Option(False, "--force", help="run even if HO looks unchanged, and past the "
                                                                "deletion cap"),
              app_spec: str = AppOption, as_json: bool = JsonOption) -> None:
    """The id reconciliation now: remove local rows HO no longer has (deletes HO never reported)."""
    with open_posync(app_spec) as sync:
        reports = sync.reconcile(resource, force=force)
    rows = [{"resource": r.resource, "skipped": r.skipped, "ho_ids": r.ho_ids, "removed": r.removed,
             "requests": r.requests, "error": r.error} for r in reports]
    if as_json:
        print_json(rows)
    else:
        print_rows(rows, ["resource", "skipped", ("ho_ids", "HO ids"), "removed", "requests", "error"],
                   title="reconciliation", empty="no pulled resource")
    if any(r["error"] for r in rows):
        raise typer.Exit(exits.ERROR)


def _done(value: dict[str, Any], said: str, as_json: bool) -> None:
    if as_json:
        print_json(value)
    else:
        typer.echo(said)
