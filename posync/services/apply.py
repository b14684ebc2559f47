"""The one path by which HO's changes reach the host's tables: pull pages, webhooks and push
conflicts all come through ``RemoteApplier.apply``.

Idempotent by version: a record whose version is not newer than the row's ``cloud_version`` is
skipped, so a page applied twice, or a webhook followed by a pull of the same change, applies once.
A record meeting an unpushed local change of the same entity goes to the conflict handler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from posync.registry import TrackedEntity
from posync.repositories import EntityRepository, OutboxRepository
from posync.services.conflicts import ConflictHandler, remote_side
from posync.services.resolve import Merge

__all__ = ["ApplyStats", "RemoteApplier"]


@dataclass
class ApplyStats:
    written: int = 0
    deleted: int = 0
    skipped: int = 0
    conflicts: int = 0
    decisions: list[str] = field(default_factory=list)

    def add(self, other: ApplyStats) -> None:
        self.written += other.written
        self.deleted += other.deleted
        self.skipped += other.skipped
        self.conflicts += other.conflicts
        self.decisions.extend(other.decisions)


class RemoteApplier:
    def __init__(self, outbox: OutboxRepository, entities: EntityRepository, handler: ConflictHandler,
                 clock: Callable[[], float]) -> None:
        self._outbox = outbox
        self._entities = entities
        self._handler = handler
        self._clock = clock

    def apply(self, conn: Connection, entity: TrackedEntity, records: Sequence[dict[str, Any]],
              tombstones: Sequence[dict[str, Any]] = (), *, source: str = "pull") -> ApplyStats:
        stats = ApplyStats()
        latest: dict[str, tuple[dict[str, Any], bool]] = {}  # a page may carry an id twice: keep the newest
        for record, deleted in [*((r, False) for r in records), *((t, True) for t in tombstones)]:
            eid = str(record["id"])
            seen = latest.get(eid)
            if seen is None or (record.get("version") or 0) >= (seen[0].get("version") or 0):
                latest[eid] = (record, deleted)
        if not latest:
            return stats
        # Lock the rows first, then look for unpushed changes: a local write that commits before our
        # lock shows up in the outbox; one after it fails its optimistic lock (we bump ``version``).
        rows = self._entities.rows(conn, entity, list(latest), for_update=True)
        pending = self._outbox.outstanding(conn, [(entity.resource, eid) for eid in latest])
        writes: list[dict[str, Any]] = []
        deletes: list[str] = []
        conflicts: list[tuple[str, dict[str, Any], bool]] = []
        for eid, (record, deleted) in latest.items():
            row = rows.get(eid)
            version = record.get("version")
            known = row["cloud_version"] if row is not None else None
            if version is not None and known is not None and int(version) <= known:
                stats.skipped += 1
            elif (entity.resource, eid) in pending:
                conflicts.append((eid, record, deleted))
            elif deleted:
                if row is None:
                    stats.skipped += 1
                else:
                    deletes.append(eid)
            else:
                writes.append(record)
        now = datetime.fromtimestamp(self._clock(), UTC)
        self._entities.write_remote(conn, entity, writes, set(rows), now)
        self._entities.delete(conn, entity, deletes)
        stats.written, stats.deleted = len(writes), len(deletes)
        for eid, record, deleted in conflicts:
            if record.get("version") is None:  # an HO that sends bare deleted ids: one past what we know
                row = rows.get(eid)
                record = {**record, "version": ((row["cloud_version"] or 0) if row is not None else 0) + 1}
            decision = self._handler.handle(conn, entity, eid, remote_side(record, deleted=deleted),
                                            source=source)
            stats.conflicts += 1
            stats.decisions.append("merge" if isinstance(decision, Merge) else str(decision))
        return stats
