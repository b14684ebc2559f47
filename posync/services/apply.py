"""The one path by which HO's changes reach the host's tables: pull pages, webhooks and push
conflicts all come through ``RemoteApplier.apply``.

Every record is checked and converted to column values first (``TrackedEntity.from_remote``); one that
does not fit fails the whole call with a ``ProtocolError`` before anything is written.

Idempotent by version: a record whose version is not newer than the row's ``cloud_version`` is
skipped, so a page applied twice, or a webhook followed by a pull of the same change, applies once. An HO
that sends no versions (the seed HO) gets one derived from its ``updated_at``: microseconds since the
epoch, newer for every later save of that record.

A record meeting an unpushed local change of the same entity goes to the conflict handler, except when it
is that change coming back: a record equal to what the outlet sent, while the push is still in flight or
just settled (two processes syncing one outlet), is the outlet's own change and not a conflict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from posync.codec import parse_datetime
from posync.errors import ProtocolError
from posync.models.enums import ItemStatus
from posync.registry import TrackedEntity
from posync.repositories import EntityRepository, OutboxRepository
from posync.services.conflicts import ConflictHandler, remote_side
from posync.services.resolve import Merge

__all__ = ["ApplyStats", "RemoteApplier", "record_version"]


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


def record_version(record: dict[str, Any]) -> int | None:
    """HO's version of a record: its ``version``, or one derived from its ``updated_at`` (µs since the
    epoch) when HO sends none; ``None`` when HO says neither."""
    version = record.get("version")
    if version is not None:
        return int(version)
    stamp = record.get("updated_at", record.get("deleted_at"))
    if stamp is None:
        return None
    try:
        moment = parse_datetime(stamp)
    except ValueError as exc:
        raise ProtocolError(f"record {str(record.get('id'))[:60]!r}: updated_at: {exc}") from None
    return int(moment.timestamp() * 1_000_000)


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
        # a page may carry an id twice: keep the newest (records before tombstones at equal versions)
        latest: dict[str, tuple[dict[str, Any], bool, int | None, dict[str, Any] | None]] = {}
        for record, deleted in [*((r, False) for r in records), *((t, True) for t in tombstones)]:
            eid = entity.record_id(record)
            version = record_version(record)
            values = None if deleted else entity.from_remote(record, eid)  # a bad record fails here, first
            seen = latest.get(eid)
            if seen is None or (version or 0) >= (seen[2] or 0):
                latest[eid] = (record, deleted, version, values)
        if not latest:
            return stats
        # Lock the rows first, then look for unpushed changes: a local write that commits before our
        # lock shows up in the outbox; one after it fails its optimistic lock (we bump ``version``).
        rows = self._entities.rows(conn, entity, list(latest), for_update=True)
        pending = self._outbox.outstanding(conn, [(entity.resource, eid) for eid in latest])
        writes: list[dict[str, Any]] = []
        deletes: list[str] = []
        conflicts: list[tuple[str, dict[str, Any], bool, int | None]] = []
        for eid, (record, deleted, version, values) in latest.items():
            row = rows.get(eid)
            known = row["cloud_version"] if row is not None else None
            items = pending.get((entity.resource, eid))
            if version is not None and known is not None and version <= known:
                stats.skipped += 1
            elif items:
                if not deleted and _own_echo(entity, items, record):
                    stats.skipped += 1  # our change coming back while its push settles: not a conflict
                else:
                    conflicts.append((eid, record, deleted, version))
            elif deleted:
                if row is None:
                    stats.skipped += 1
                else:
                    deletes.append(eid)
            else:
                assert values is not None
                writes.append({**values, "cloud_version": version})
        now = datetime.fromtimestamp(self._clock(), UTC)
        self._entities.write_remote(conn, entity, writes, set(rows), now)
        self._entities.delete(conn, entity, deletes)
        stats.written, stats.deleted = len(writes), len(deletes)
        for eid, record, deleted, version in conflicts:
            if version is None:  # an HO that sends bare deleted ids: one past what we know
                row = rows.get(eid)
                version = ((row["cloud_version"] or 0) if row is not None else 0) + 1
            decision = self._handler.handle(conn, entity, eid, remote_side(entity, {**record, "version": version},
                                                                            deleted=deleted), source=source)
            stats.conflicts += 1
            stats.decisions.append("merge" if isinstance(decision, Merge) else str(decision))
        return stats


def _own_echo(entity: TrackedEntity, items: list[dict[str, Any]], record: dict[str, Any]) -> bool:
    """Is ``record`` exactly a change the outlet has in flight (sent, not yet settled)? Then HO applied
    the outlet's own push, whose answer settles it (and re-bases any later change of the entity)."""
    for item in reversed(items):
        payload = item.get("payload")
        if item["status"] != ItemStatus.INFLIGHT.value or not isinstance(payload, dict):
            continue
        data = payload.get("data")
        return isinstance(data, dict) and all(record.get(name) == value for name, value in data.items())
    return False
