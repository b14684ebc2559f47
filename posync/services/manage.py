"""Management: what an operator (or the host's code) asks of posync — status, queue, logs, retries,
conflicts and their resolution. Seed 003's management endpoints map one-to-one onto these methods."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.engine import Connection, Engine, RowMapping

from posync import capture
from posync.db import UnitOfWork, WriteGate
from posync.errors import ConflictStateError, NotFoundError
from posync.models.enums import ConflictStatus, ItemStatus, LogKind, SyncStatus
from posync.registry import Registry
from posync.repositories import (
    CheckpointRepository,
    ConflictRepository,
    EntityRepository,
    LogRepository,
    OutboxRepository,
)
from posync.repositories.outlet import OutletRepository
from posync.services.conflicts import ConflictHandler
from posync.services.pull import PullService

__all__ = ["CycleState", "StatusReport", "SyncManager"]


class CycleState(Protocol):
    """What status needs of the sync cycle (``posync.workers.SyncWorker``): services never import workers."""

    @property
    def online(self) -> bool: ...

    @property
    def auth_error(self) -> str | None: ...

    @property
    def last_error(self) -> str | None: ...


@dataclass(frozen=True)
class StatusReport:
    queue: dict[str, int]
    open_conflicts: int
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

    @property
    def pending(self) -> int:
        return self.queue.get(ItemStatus.PENDING.value, 0) + self.queue.get(ItemStatus.INFLIGHT.value, 0)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _jsonable({**asdict(self), "pending": self.pending})
        return out


def _aware(value: datetime | None) -> datetime | None:
    """posync stores UTC; SQLite hands it back without the offset."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return _aware(value).isoformat()  # type: ignore[union-attr]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _row(row: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    out: dict[str, Any] = _jsonable(dict(row))
    return out


class SyncManager:
    def __init__(self, engine: Engine, registry: Registry, outbox: OutboxRepository, entities: EntityRepository,
                 conflicts: ConflictRepository, logs: LogRepository, checkpoints: CheckpointRepository,
                 handler: ConflictHandler, clock: Callable[[], float] = time.time, *, gate: WriteGate | None = None,
                 worker: CycleState | None = None, pull: PullService | None = None) -> None:
        self._gate = gate or WriteGate()
        self._worker = worker
        self._pull = pull
        self.photos: Any | None = None  # a posync.photos.PhotoSync
        self._engine = engine
        self._registry = registry
        self._outbox = outbox
        self._entities = entities
        self._conflicts = conflicts
        self._logs = logs
        self._checkpoints = checkpoints
        self._handler = handler
        self._clock = clock
        self._outlet = OutletRepository()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with UnitOfWork(self._engine, gate=self._gate, clock=self._clock).begin() as conn:
            yield conn

    def status(self) -> StatusReport:
        pull = self._pull
        with self._engine.connect() as conn:
            missing = [r for r, ok in capture.installed(conn, self._registry).items() if not ok]
            # the outlet's syncer's last cycle, whichever worker process ran it and whichever one answers
            health = self._outlet.health(conn)
            cycle: CycleState | None = health if health is not None and health.last_cycle_at else self._worker
            return StatusReport(
                queue=self._outbox.counts(conn),
                open_conflicts=self._conflicts.count_open(conn),
                last_push_at=_aware(self._logs.last_at(conn, LogKind.PUSH)),
                last_pull_at=_aware(self._logs.last_at(conn, LogKind.PULL)),
                checkpoints=[_row(r) for r in self._checkpoints.all(conn)],
                online=cycle.online if cycle else True,
                auth_error=cycle.auth_error if cycle else None,
                last_error=cycle.last_error if cycle else None,
                last_cycle_at=_aware(health.last_cycle_at) if health else None,
                resources={name: h.as_dict() for name, h in (pull.health.items() if pull else ())},
                ho_clock_offset_seconds=(round(pull.client.clock.seconds, 3)
                                         if pull and pull.client.clock.known else None),
                capture_missing=missing,
                photos=self.photos.status() if self.photos is not None else None,
            )

    def queue(self, status: ItemStatus | None = None, limit: int = 100, offset: int = 0, *,
              resource: str | None = None, entity_id: str | None = None) -> list[dict[str, Any]]:
        with self._engine.connect() as conn:
            return [_row(r) for r in self._outbox.find(conn, [status] if status else None, limit, offset,
                                                       resource=resource, entity_id=entity_id)]

    def logs(self, limit: int = 100, kind: str | None = None) -> list[dict[str, Any]]:
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

    def retry(self, item_id: int) -> None:
        """Put a dead (or backing-off) change back in line now. A dead change is re-read from its row and
        sent under a new key: HO never applied it, and the row may have been fixed since."""
        with self._transaction() as conn:
            item = self._outbox.get(conn, item_id)
            if item is None:
                raise NotFoundError("queue item", item_id)
            self._retry(conn, item)

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
