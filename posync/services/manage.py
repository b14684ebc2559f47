"""Management: what an operator (or the host's code) asks of posync — status, queue, logs, retries,
conflicts and their resolution. Seed 003's management endpoints map one-to-one onto these methods."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine, RowMapping

from posync.db import UnitOfWork, WriteGate
from posync.errors import ConflictStateError, NotFoundError
from posync.models.enums import ConflictStatus, ItemStatus, LogKind, SyncStatus, log_kind
from posync.registry import Registry
from posync.repositories import (
    CheckpointRepository,
    ConflictRepository,
    EntityRepository,
    LogRepository,
    OutboxRepository,
)
from posync.services.conflicts import ConflictHandler
from posync.services.pull import PullService
from posync.services.status import (
    CycleOutcome,
    CycleRecord,
    CycleState,
    HealthRules,
    MetricsSnapshot,
    OutletStatus,
    StatusReport,
    jsonable,
)

__all__ = ["CycleState", "StatusReport", "SyncManager"]

RETENTION_CHUNK = 500  # sync log rows folded or removed per transaction: a till's write never waits long
RETENTION_MAX_CHUNKS = 2000  # per housekeeping run; a bigger backlog goes on at the next run
# rows younger than this are not folded yet: a write transaction still open then may hold a lower id
SETTLE_SECONDS = 600.0


def _row(row: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    out: dict[str, Any] = jsonable(dict(row))
    return out


class SyncManager:
    def __init__(self, engine: Engine, registry: Registry, outbox: OutboxRepository, entities: EntityRepository,
                 conflicts: ConflictRepository, logs: LogRepository, checkpoints: CheckpointRepository,
                 handler: ConflictHandler, clock: Callable[[], float] = time.time, *, gate: WriteGate | None = None,
                 worker: CycleState | None = None, pull: PullService | None = None,
                 rules: HealthRules | None = None) -> None:
        self._gate = gate or WriteGate()
        self._engine = engine
        self._registry = registry
        self._outbox = outbox
        self._entities = entities
        self._conflicts = conflicts
        self._logs = logs
        self._checkpoints = checkpoints
        self._handler = handler
        self._clock = clock
        # status reads posync's clock through this manager (a test's harness sets it here)
        self.outlet_status = OutletStatus(engine, registry, outbox, conflicts, logs, checkpoints,
                                          lambda: self._clock(), gate=self._gate, rules=rules, worker=worker,
                                          pull=pull)

    @property
    def photos(self) -> Any | None:
        """The host's ``posync.photos.PhotoSync``, shown in status."""
        return self.outlet_status.photos

    @photos.setter
    def photos(self, value: Any | None) -> None:
        self.outlet_status.photos = value

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with UnitOfWork(self._engine, gate=self._gate, clock=self._clock).begin() as conn:
            yield conn

    def status(self, *, check_ho: bool = False) -> StatusReport:
        """The outlet's status and health; ``check_ho``: with a live, bounded call to HO's version endpoint."""
        return self.outlet_status.status(check_ho=check_ho)

    def metrics(self) -> MetricsSnapshot:
        """Status plus the sync log's running totals (the metrics endpoint's counters)."""
        return self.outlet_status.metrics()

    def record_cycle(self, *, online: bool, last_error: str | None, auth_error: str | None,
                     cycle: CycleOutcome | None, last_error_kind: str | None = None) -> None:
        self.outlet_status.record_cycle(online=online, last_error=last_error, auth_error=auth_error, cycle=cycle,
                                        last_error_kind=last_error_kind)

    def log_mark(self) -> int:
        """Where the sync log stands now (see :meth:`cycle_after`)."""
        return self.outlet_status.log_mark()

    def cycle_after(self, mark: int) -> CycleRecord | None:
        """The first cycle the outlet's syncer recorded after ``mark`` (:meth:`log_mark`), and how it went."""
        return self.outlet_status.cycle_after(mark)

    def purge_logs(self, older_than_days: float) -> int:
        """Fold the sync log's settled rows into the metrics' totals, then remove rows older than
        ``older_than_days`` (their counts stay in the totals); a chunk per transaction. Returns how many
        rows were removed."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        self._in_chunks(lambda conn: self._logs.fold(conn, RETENTION_CHUNK, now - timedelta(seconds=SETTLE_SECONDS)))
        before = now - timedelta(days=older_than_days)
        return self._in_chunks(lambda conn: self._logs.delete_folded(conn, before, RETENTION_CHUNK))

    def _in_chunks(self, step: Callable[[Connection], int]) -> int:
        done = 0
        for _ in range(RETENTION_MAX_CHUNKS):
            with self._transaction() as conn:
                n = step(conn)
            done += n
            if n < RETENTION_CHUNK:
                break
        return done

    def queue(self, status: ItemStatus | None = None, limit: int = 100, offset: int = 0, *,
              resource: str | None = None, entity_id: str | None = None) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            return [_row(r) for r in self._outbox.find(conn, [status] if status else None, limit, offset,
                                                       resource=resource, entity_id=entity_id)]

    def logs(self, limit: int = 100, kind: str | None = None) -> list[dict[str, Any]]:
        """The sync log, newest first; ``kind``: one LogKind's rows only (else a ValueError naming them)."""
        if kind:
            kind = log_kind(kind).value
        with self._engine.connect() as conn:
            return [_row(r) for r in self._logs.recent(conn, limit=limit, kind=kind)]

    def conflicts(self, status: str | None = ConflictStatus.OPEN.value, limit: int = 100) -> list[dict[str, Any]]:
        """Conflicts, newest first; an open one shows the local side as it is now."""
        with self._engine.connect() as conn:
            out = []
            for record in self._conflicts.find(conn, status=status, limit=limit):
                row = dict(record)
                if row["status"] == ConflictStatus.OPEN:
                    now = self._handler.local_now(conn, row["resource"], row["entity_id"])
                    if now is not None:
                        row["local_op"], row["local_data"] = now
                out.append(_row(row))
            return out

    def conflict(self, conflict_id: int) -> dict[str, Any]:
        """One conflict, open or resolved; an open one shows the local side as it is now."""
        with self._engine.connect() as conn:
            record = self._conflicts.get(conn, conflict_id)
            if record is None:
                raise NotFoundError("conflict", conflict_id)
            row = dict(record)
            if row["status"] == ConflictStatus.OPEN:
                now = self._handler.local_now(conn, row["resource"], row["entity_id"])
                if now is not None:
                    row["local_op"], row["local_data"] = now
            return _row(row)

    def resolve(self, conflict_id: int, choice: str | dict[str, Any]) -> None:
        with self._transaction() as conn:
            self._handler.resolve(conn, conflict_id, choice)

    def retry(self, item_id: int) -> str:
        """Put a dead (or backing-off) change back in line now. A dead change is re-read from its row and
        sent under a new key: HO never applied it, and the row may have been fixed since. A pending one was
        in line already: its backoff and attempts are cleared. Returns the status it had (ItemStatus)."""
        with self._transaction() as conn:
            item = self._outbox.get(conn, item_id)
            if item is None:
                raise NotFoundError("queue item", item_id)
            self._retry(conn, item)
            return str(item["status"])

    def retry_all(self) -> int:
        """Retry every dead change. Returns how many."""
        with self._transaction() as conn:
            ids = self._outbox.dead_ids(conn)
            for item_id in ids:
                item = self._outbox.get(conn, item_id)
                if item is not None:
                    self._retry(conn, item)
            return len(ids)

    def _retry(self, conn: Any, item: RowMapping) -> None:
        status = item["status"]
        now = self._clock()
        if status == ItemStatus.CONFLICT.value:
            raise ConflictStateError(f"queue item {item['id']} waits on a conflict: resolve the conflict")
        if status == ItemStatus.INFLIGHT.value:
            raise ConflictStateError(f"queue item {item['id']} is being pushed right now")
        key = (item["resource"], item["entity_id"])
        values: dict[str, Any] = {"status": ItemStatus.PENDING.value, "available_at": now, "attempts": 0}
        if status == ItemStatus.DEAD.value:
            values |= {"idempotency_key": None, "payload": None}
        self._outbox.reset(conn, item["id"], values)
        followers = [i["id"] for i in self._outbox.entity_items(conn, key) if i["status"] == ItemStatus.BLOCKED.value]
        self._outbox.reset_many(conn, followers, {"status": ItemStatus.PENDING.value, "available_at": now})
        if item["resource"] in self._registry and status == ItemStatus.DEAD.value:
            self._entities.set_status(conn, self._registry[item["resource"]], item["entity_id"], SyncStatus.PENDING)
        self._logs.add(conn, LogKind.RETRY, datetime.fromtimestamp(now, UTC), resource=key[0], entity_id=key[1],
                       detail=f"queue item {item['id']} retried on demand")
