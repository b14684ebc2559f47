"""The outlet's status and health (seed 003's metrics and alert thresholds), the same from whichever
worker process answers: it is read from the outlet database, never from a process's memory.

Every sync cycle that runs leaves a ``posync_sync_log`` row (``cycle``, or ``cycle_failed`` with why), its
duration and the changes it moved: the success and failure rates, the average duration and the last
successful sync are computed from those rows, so a quiet outlet whose cycles move nothing still shows it
syncs. Health is a verdict with its reasons (:func:`assess`, pure): more than ``max_failure_rate`` of the
window's cycles failed, no cycle completed for ``max_silence_seconds``, dead letters, HO out of reach or
refusing the credentials (when known), capture triggers missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.engine import Connection, Engine

from posync import capture
from posync.db import UnitOfWork, WriteGate
from posync.errors import AuthenticationError, HOErrorResponse, PosyncError, ProtocolError
from posync.ho import HOClient
from posync.models.enums import ItemStatus, LogKind
from posync.registry import Registry
from posync.repositories import CheckpointRepository, ConflictRepository, LogRepository, OutboxRepository
from posync.repositories.logs import CycleWindow, LogTotal
from posync.repositories.outlet import OutletRepository
from posync.services.pull import PullService

__all__ = ["CycleOutcome", "CycleRecord", "CycleState", "HealthRules", "MetricsSnapshot", "OutletStatus",
           "StatusReport", "assess", "jsonable", "probe_ho", "window_rates"]

DEAD_LETTERS_SHOWN = 100  # status lists this many dead entities; the count in ``queue`` is the whole
PENDING = (ItemStatus.PENDING, ItemStatus.INFLIGHT)  # what ``StatusReport.pending`` counts


class CycleState(Protocol):
    """What status needs of the sync cycle (``posync.workers.SyncWorker``): services never import workers."""

    @property
    def online(self) -> bool: ...

    @property
    def auth_error(self) -> str | None: ...

    @property
    def last_error(self) -> str | None: ...


@dataclass(frozen=True)
class HealthRules:
    """Seed 003's alert thresholds (``PosyncSettings.health_*``)."""

    window_seconds: int = 3600
    max_failure_rate: float = 0.10
    max_silence_seconds: float = 3600.0


@dataclass(frozen=True)
class CycleOutcome:
    """One sync cycle as the syncer records it. ``error``: why it failed (None: it completed)."""

    error: str | None
    seconds: float
    moved: int = 0  # changes pushed and pulled


@dataclass(frozen=True)
class CycleRecord:
    """A cycle the syncer recorded, as another process reads it (``posync sync`` asking the syncer)."""

    at: datetime
    moved: int  # changes pushed and pulled
    seconds: float | None
    error: str | None  # None: it completed
    # why it failed, as the syncer recorded it: "auth", "unavailable", "error"; None when it completed, or
    # when only a pulled resource failed (the syncer's cycle itself did not fail)
    error_kind: str | None


@dataclass(frozen=True)
class StatusReport:
    queue: dict[str, int]
    open_conflicts: int
    # the last successful push and pull passes (a completed cycle counts, even one that moved nothing)
    last_push_at: datetime | None
    last_pull_at: datetime | None
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    online: bool = True
    # HO refused the credentials (a configuration to fix, not an outage)
    auth_error: str | None = None
    last_error: str | None = None
    # resources whose pulls fail on their own: resource -> failures, since, last error, next attempt
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    # HO's clock minus the outlet's, as posync estimates it (newest_wins compares in HO's clock)
    ho_clock_offset_seconds: float | None = None
    # when the outlet's syncer last ran a cycle (any worker process), and when one last reached HO
    last_cycle_at: datetime | None = None
    # pushed resources whose capture triggers are missing (a host migration that rebuilt the table)
    capture_missing: list[str] = field(default_factory=list)
    # product photos (posync.photos), when the host wired them in
    photos: dict[str, Any] | None = None
    # how long the oldest change not yet at HO (pending or in flight) has waited
    oldest_pending_age_seconds: float | None = None
    # one per entity with a dead change: item_id, resource, entity_id, attempts, last_error, at
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    last_success_at: datetime | None = None  # the last completed sync cycle
    last_photo_pass_at: datetime | None = None  # the last successful photo pass
    # seed 003's metrics over the last window_seconds (None: no cycle ran in it)
    window_seconds: int = 3600
    cycles: int = 0
    success_rate: float | None = None
    failure_rate: float | None = None
    avg_duration_seconds: float | None = None
    lag_seconds: float | None = None  # now minus the last successful pull
    # job -> its next run, from posync's scheduler in this process (empty when it does not run here)
    next_runs: dict[str, datetime | None] = field(default_factory=dict)
    # check_ho=True only: reachable, auth_ok, error, latency_ms of a live call to HO's version endpoint
    ho: dict[str, Any] | None = None
    healthy: bool = True
    reasons: list[str] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return sum(self.queue.get(s.value, 0) for s in PENDING)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = jsonable({**asdict(self), "pending": self.pending})
        return out


@dataclass(frozen=True)
class MetricsSnapshot:
    """What the metrics endpoint publishes, read from the outlet database in one go."""

    status: StatusReport
    totals: list[LogTotal]


def aware(value: datetime | None) -> datetime | None:
    """posync stores UTC; SQLite hands it back without the offset."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return aware(value).isoformat()  # type: ignore[union-attr]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def _latest(*values: datetime | None) -> datetime | None:
    known = [v for v in (aware(x) for x in values) if v is not None]
    return max(known) if known else None


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def window_rates(window: CycleWindow) -> tuple[float | None, float | None, float | None]:
    """Seed 003's success rate, failure rate and average duration (seconds) of a window's cycles; None
    for each when no cycle ran in it."""
    cycles = window.ok + window.failed
    if not cycles:
        return None, None, None
    return window.ok / cycles, window.failed / cycles, window.duration_ms / cycles / 1000


def assess(rules: HealthRules, *, now: datetime, window: CycleWindow, last_success_at: datetime | None,
           watched_since: datetime | None, dead: int = 0, auth_error: str | None = None,
           ho: dict[str, Any] | None = None, capture_missing: list[str] | None = None,
           last_attempt_error: str | None = None) -> list[str]:
    """Why the outlet is unhealthy, one short sentence each (none: healthy). ``watched_since``: when posync
    started on this database (an outlet that never synced is judged from then). ``last_attempt_error``: the
    syncer's last attempt failed (HO away, say), as recorded; a live check (``ho``) is newer and wins."""
    reasons: list[str] = []
    cycles = window.ok + window.failed
    if cycles and window.failed / cycles > rules.max_failure_rate:
        reasons.append(f"{window.failed} of {cycles} sync cycles failed in the last "
                       f"{_duration(rules.window_seconds)} ({window.failed / cycles:.0%}, more than "
                       f"{rules.max_failure_rate:.0%})")
    since = last_success_at or watched_since
    silent = (now - since).total_seconds() if since is not None else 0.0
    if silent > rules.max_silence_seconds:
        reasons.append(f"no sync completed for {_duration(silent)}" if last_success_at
                       else f"no sync has completed since posync started here {_duration(silent)} ago")
    if dead:
        reasons.append(f"{dead} change{'s' if dead != 1 else ''} set aside (dead letters): fix and retry "
                       f"{'them' if dead != 1 else 'it'}")
    if ho is not None and not ho.get("reachable"):
        reasons.append(f"head office unreachable: {ho.get('error')}")
    elif (ho is not None and ho.get("auth_ok") is False) or auth_error:
        reasons.append("head office refuses posync's credentials: fix the settings")
    elif ho is None and last_attempt_error:
        reasons.append(f"the syncer's last attempt failed (changes stay queued): {last_attempt_error}")
    if capture_missing:
        reasons.append(f"changes to {', '.join(capture_missing)} are not captured: their triggers are missing")
    return reasons


def probe_ho(client: HOClient) -> dict[str, Any]:
    """A live call to HO's version endpoint (bounded by the client's request timeout)."""
    started = time.perf_counter()
    reachable: bool = True
    auth_ok: bool | None = True
    error: str | None = None
    try:
        client.version()
    except AuthenticationError as exc:
        auth_ok, error = False, str(exc)
    except (ProtocolError, HOErrorResponse) as exc:  # HO answered, with something posync cannot use
        auth_ok, error = None, str(exc)
    except PosyncError as exc:  # unreachable, timed out, 5xx/429, or the client is closed
        reachable, auth_ok, error = False, None, str(exc) or type(exc).__name__
    latency = round((time.perf_counter() - started) * 1000, 1)
    return {"reachable": reachable, "auth_ok": auth_ok, "error": error, "latency_ms": latency if reachable else None}


class OutletStatus:
    """Reads the outlet's status from its database, and records each sync cycle the syncer runs there."""

    def __init__(self, engine: Engine, registry: Registry, outbox: OutboxRepository, conflicts: ConflictRepository,
                 logs: LogRepository, checkpoints: CheckpointRepository, clock: Callable[[], float], *,
                 gate: WriteGate | None = None, rules: HealthRules | None = None, worker: CycleState | None = None,
                 pull: PullService | None = None) -> None:
        self._engine = engine
        self._registry = registry
        self._outbox = outbox
        self._conflicts = conflicts
        self._logs = logs
        self._checkpoints = checkpoints
        self._clock = clock
        self._gate = gate or WriteGate()
        self.rules = rules or HealthRules()
        self._worker = worker
        self._pull = pull
        self._outlet = OutletRepository()
        self.photos: Any | None = None  # a posync.photos.PhotoSync
        self.next_runs: Callable[[], dict[str, datetime | None]] | None = None  # the scheduler's, when it runs here

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with UnitOfWork(self._engine, gate=self._gate, clock=self._clock).begin() as conn:
            yield conn

    # -- writing: the syncer, after each cycle -------------------------------------------------------------

    def record_cycle(self, *, online: bool, last_error: str | None, auth_error: str | None,
                     cycle: CycleOutcome | None, last_error_kind: str | None = None) -> None:
        """The syncer's state after a run (with its last failure's kind: "auth", "unavailable", "error"),
        and (a cycle, not a push on its own) the cycle's log row: one short write transaction."""
        now = self._now()
        with self._transaction() as conn:
            self._outlet.record_cycle(conn, online=online, last_error=last_error, auth_error=auth_error, at=now,
                                      last_error_kind=last_error_kind)
            if cycle is not None:
                self._logs.add(conn, LogKind.CYCLE if cycle.error is None else LogKind.CYCLE_FAILED, now,
                               count=cycle.moved, duration_ms=round(cycle.seconds * 1000, 3),
                               detail=None if cycle.error is None else cycle.error[:2000])

    # -- reading -----------------------------------------------------------------------------------------

    def log_mark(self) -> int:
        """Where the sync log stands now: :meth:`cycle_after` finds the first cycle recorded after it."""
        with self._engine.connect() as conn:
            return self._logs.newest_id(conn)

    def cycle_after(self, mark: int) -> CycleRecord | None:
        """The first cycle the syncer recorded after ``mark`` (:meth:`log_mark`), with its failure's kind
        (read in the same look: the outlet row and the cycle's log row are written in one transaction)."""
        with self._engine.connect() as conn:
            row = self._logs.first_cycle_after(conn, mark)
            if row is None:
                return None
            health = self._outlet.health(conn)
        failed = row["kind"] == LogKind.CYCLE_FAILED.value
        kind = health.last_error_kind if failed and health is not None and health.last_error else None
        ms = row["duration_ms"]
        return CycleRecord(aware(row["at"]) or self._now(), int(row["count"] or 0),
                           None if ms is None else ms / 1000, row["detail"] if failed else None, kind)

    def status(self, *, check_ho: bool = False) -> StatusReport:
        return self._read(check_ho=check_ho)[0]

    def metrics(self) -> MetricsSnapshot:
        report, totals = self._read(check_ho=False, totals=True)
        return MetricsSnapshot(report, totals or [])

    def _read(self, *, check_ho: bool, totals: bool = False) -> tuple[StatusReport, list[LogTotal] | None]:
        pull = self._pull
        live = probe_ho(pull.client) if check_ho and pull is not None else None
        now = self._now()
        rules = self.rules
        with self._engine.connect() as conn:
            missing = [r for r, ok in capture.installed(conn, self._registry).items() if not ok]
            # the outlet's syncer's last cycle, whichever worker process ran it and whichever one answers
            health = self._outlet.health(conn)
            cycle: CycleState | None = health if health is not None and health.last_cycle_at else self._worker
            queue = self._outbox.counts(conn)
            oldest = aware(self._outbox.oldest_changed_at(conn, PENDING))
            dead = self._dead_letters(conn)
            window = self._logs.cycles_since(conn, now - timedelta(seconds=rules.window_seconds))
            last_ok = aware(self._logs.last_at(conn, LogKind.CYCLE))
            last_push = _latest(self._logs.last_at(conn, LogKind.PUSH), last_ok)
            last_pull = _latest(self._logs.last_at(conn, LogKind.PULL), last_ok)
            report_totals = self._logs.totals(conn) if totals else None
            open_conflicts = self._conflicts.count_open(conn)
            checkpoints = [jsonable(dict(r)) for r in self._checkpoints.all(conn)]
        photos = self.photos.status() if self.photos is not None else None
        last_success = last_ok or (aware(health.last_sync_at) if health is not None else None)
        auth_error = cycle.auth_error if cycle else None
        if live is not None and live["auth_ok"] is not None:  # HO just answered: its word is the newest
            auth_error = None if live["auth_ok"] else live["error"]
        reasons = assess(rules, now=now, window=window, last_success_at=last_success,
                         watched_since=aware(health.bound_at) if health is not None else None,
                         dead=queue.get(ItemStatus.DEAD.value, 0), auth_error=auth_error, ho=live,
                         capture_missing=missing,
                         last_attempt_error=cycle.last_error if cycle is not None and not cycle.online else None)
        cycles = window.ok + window.failed
        success, failure, avg = window_rates(window)
        report = StatusReport(
            queue=queue,
            open_conflicts=open_conflicts,
            last_push_at=last_push,
            last_pull_at=last_pull,
            checkpoints=checkpoints,
            online=(cycle.online if cycle else True) if live is None else bool(live["reachable"]),
            auth_error=auth_error,
            last_error=cycle.last_error if cycle else None,
            last_cycle_at=aware(health.last_cycle_at) if health else None,
            resources={name: h.as_dict() for name, h in (pull.health.items() if pull else ())},
            ho_clock_offset_seconds=(round(pull.client.clock.seconds, 3) if pull and pull.client.clock.known else None),
            capture_missing=missing,
            photos=photos,
            oldest_pending_age_seconds=(None if oldest is None else round(max(0.0, (now - oldest).total_seconds()), 3)),
            dead_letters=dead,
            last_success_at=last_success,
            last_photo_pass_at=_photo_pass(photos),
            window_seconds=rules.window_seconds,
            cycles=cycles,
            success_rate=success,
            failure_rate=failure,
            avg_duration_seconds=None if avg is None else round(avg, 4),
            lag_seconds=None if last_pull is None else round(max(0.0, (now - last_pull).total_seconds()), 3),
            next_runs=self.next_runs() if self.next_runs is not None else {},
            ho=live,
            healthy=not reasons,
            reasons=reasons,
        )
        return report, report_totals

    def _dead_letters(self, conn: Connection) -> list[dict[str, Any]]:
        per_entity: dict[tuple[str, str], dict[str, Any]] = {}
        for row in self._outbox.dead_letters(conn, DEAD_LETTERS_SHOWN):
            per_entity.setdefault((row["resource"], row["entity_id"]), {  # the entity's first dead change
                "item_id": row["id"], "resource": row["resource"], "entity_id": row["entity_id"],
                "attempts": row["attempts"], "last_error": row["last_error"], "at": aware(row["changed_at"])})
        died = self._logs.last_entity_events(conn, LogKind.DEAD, list(per_entity))
        for key, letter in per_entity.items():
            letter["at"] = aware(died.get(key)) or letter["at"]  # when it was set aside, else when it was made
        return list(per_entity.values())


def _photo_pass(photos: dict[str, Any] | None) -> datetime | None:
    if not photos:
        return None
    passes = [datetime.fromisoformat(v) for v in (photos.get("last_incremental_at"), photos.get("last_full_at")) if v]
    return _latest(*passes)
