"""Carry out conflict decisions, and resolve manual conflicts.

The decision itself is pure (``posync.services.resolve``); this module performs it against the
host row, the outbox and the conflict inbox, inside the caller's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from posync.errors import ConflictStateError, NotFoundError, ProtocolError
from posync.ho.wire import Current
from posync.models.enums import ConflictStatus, ItemStatus, LogKind, Op, SyncStatus
from posync.models.outbox import queued_change
from posync.registry import Registry, TrackedEntity, parse_timestamp
from posync.repositories import ConflictRepository, EntityRepository, LogRepository, OutboxRepository
from posync.services.resolve import Decision, LocalSide, Merge, RemoteSide, decide

__all__ = ["ConflictHandler", "remote_current", "remote_side"]

log = logging.getLogger("posync.conflicts")


def _parse_ts(value: Any) -> datetime | None:
    """A timestamp for deciding conflicts; an unreadable one counts as unknown."""
    try:
        parsed = parse_timestamp(value)
    except ProtocolError:
        return None
    return parsed if isinstance(parsed, datetime) else None


_META = ("version", "updated_at", "deleted_at")


def remote_side(entity: TrackedEntity, record: dict[str, Any], *, deleted: bool = False) -> RemoteSide:
    """A pulled record, tombstone or webhook record (flat: fields beside ``id``), with its version
    (HO's, or derived from its ``updated_at``) in ``record["version"]``."""
    data = None if deleted else {k: v for k, v in record.items() if k not in _META}
    return RemoteSide(int(record["version"]), deleted, data, _parse_ts(record.get("updated_at")))


def remote_current(current: Current) -> RemoteSide:
    """HO's ``current`` record from a push conflict (already checked: ``posync.ho.wire.Current``)."""
    data = None if current.deleted else dict(current.data or {})
    return RemoteSide(current.version, current.deleted, data, _parse_ts(current.updated_at))


@dataclass(frozen=True)
class _Local:
    row: dict[str, Any] | None
    items: list[dict[str, Any]]


class ConflictHandler:
    """``ho_clock_offset``: HO's clock minus the outlet's, in seconds (``posync.ho.ClockOffset``). A local
    side's ``changed_at`` is given in HO's clock, so ``newest_wins`` compares two times of one clock."""

    def __init__(self, registry: Registry, outbox: OutboxRepository, entities: EntityRepository,
                 conflicts: ConflictRepository, logs: LogRepository, clock: Callable[[], float],
                 ho_clock_offset: Callable[[], float] = lambda: 0.0) -> None:
        self._ho_clock_offset = ho_clock_offset
        self._registry = registry
        self._outbox = outbox
        self._entities = entities
        self._conflicts = conflicts
        self._logs = logs
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _local(self, conn: Connection, entity: TrackedEntity, entity_id: str) -> _Local:
        row = self._entities.rows(conn, entity, [entity_id], for_update=True).get(entity_id)
        return _Local(row, self._outbox.entity_items(conn, (entity.resource, entity_id)))

    def handle(self, conn: Connection, entity: TrackedEntity, entity_id: str, remote: RemoteSide, *,
               source: str, own_item_id: int | None = None) -> Decision | Merge:
        """HO's ``remote`` met unpushed local changes of this entity: decide, then do it."""
        local = self._local(conn, entity, entity_id)
        shift = timedelta(seconds=self._ho_clock_offset())
        if local.row is not None:
            first_op = Op(local.items[0]["op"]) if local.items else Op.UPDATE
            changed = _parse_ts(local.row["updated_at"]) or self._now()
            side = LocalSide(Op.CREATE if first_op is Op.CREATE else Op.UPDATE, entity.to_payload(local.row),
                             changed + shift)
        else:
            changed = (_parse_ts(local.items[-1]["changed_at"]) if local.items else None) or self._now()
            side = LocalSide(Op.DELETE, None, changed + shift)
        decision = entity.resolver(side, remote) if entity.resolver else decide(entity.strategy, side, remote)
        # inflight items of another worker's push stay with that push (its answer is settled by version)
        mine = [i for i in local.items if i["status"] != ItemStatus.INFLIGHT.value or i["id"] == own_item_id]
        now = self._now()
        if decision is Decision.TAKE_REMOTE:
            self._take_remote(conn, entity, entity_id, remote, local.row is not None, now)
            self._outbox.delete(conn, [i["id"] for i in mine])
            self._logs.add(conn, LogKind.DROPPED, now, resource=entity.resource, entity_id=entity_id,
                           count=len(mine), detail=f"{source}: cloud's v{remote.version} replaced local change")
        elif decision is Decision.MANUAL:
            cid = self._conflicts.record(
                conn, resource=entity.resource, entity_id=entity_id, local_op=side.op.value,
                local_data=side.data, remote_version=remote.version, remote_deleted=remote.deleted,
                remote_data=remote.data, source=source, now=now)
            # this conflict's own changes wait; another worker's push in flight settles by its own answer
            self._outbox.set_status(conn, [i["id"] for i in mine], ItemStatus.CONFLICT)
            if local.row is not None:
                self._entities.set_status(conn, entity, entity_id, SyncStatus.CONFLICT)
            self._logs.add(conn, LogKind.CONFLICT, now, resource=entity.resource, entity_id=entity_id,
                           detail=f"{source}: conflict #{cid} waits for a manual resolution")
            log.warning("conflict #%s on %s:%s waits for a manual resolution (posync resolve)", cid, entity.resource,
                        entity_id, extra={"event": "conflict.opened", "conflict_id": cid, "resource": entity.resource,
                                          "entity_id": entity_id, "source": source})
        else:
            exists = local.row is not None
            if isinstance(decision, Merge):
                self._entities.write_local(conn, entity, entity_id, decision.data, now)
                exists = True
            self._requeue_local(conn, entity, entity_id, remote, mine, exists, now)
            self._logs.add(conn, LogKind.REBASED, now, resource=entity.resource, entity_id=entity_id,
                           detail=f"{source}: local change re-based on cloud's v{remote.version}")
        return decision

    def _take_remote(self, conn: Connection, entity: TrackedEntity, entity_id: str, remote: RemoteSide,
                     local_exists: bool, now: datetime) -> None:
        if remote.deleted:
            if local_exists:
                self._entities.delete(conn, entity, [entity_id])
            return
        record: dict[str, Any] = {**(remote.data or {}), "id": entity_id}
        if remote.updated_at is not None:
            record["updated_at"] = remote.updated_at.isoformat()
        values = {**entity.from_remote(record), "cloud_version": remote.version}
        self._entities.write_remote(conn, entity, [values], {entity_id} if local_exists else set(), now)

    def _requeue_local(self, conn: Connection, entity: TrackedEntity, entity_id: str, remote: RemoteSide,
                       items: Sequence[Mapping[str, Any]], local_exists: bool, now: datetime) -> None:
        """Replace the entity's unsent items by one fresh change based on HO's version (new key)."""
        self._outbox.delete(conn, [i["id"] for i in items])
        if local_exists:
            op = Op.CREATE if remote.deleted else Op.UPDATE
            self._entities.set_status(conn, entity, entity_id, SyncStatus.PENDING, cloud_version=remote.version)
        elif remote.deleted:
            return  # deleted on both sides: nothing left to say
        else:
            op = Op.DELETE
        self._outbox.insert(conn, queued_change(entity.resource, entity_id, op, base_version=remote.version,
                                                entity_version=None, changed_at=now))

    # -- the manual inbox ------------------------------------------------------------------------------

    def local_now(self, conn: Connection, resource: str, entity_id: str) -> tuple[str, dict[str, Any] | None] | None:
        """The local side of an open conflict as it is now (``(op, data)``): the host may have edited or
        deleted the row since the conflict was recorded, and an operator must choose on what is there."""
        if resource not in self._registry:
            return None
        entity = self._registry[resource]
        row = self._entities.rows(conn, entity, [entity_id]).get(entity_id)
        if row is None:
            return Op.DELETE.value, None
        items = self._outbox.entity_items(conn, (resource, entity_id))
        first = Op(items[0]["op"]) if items else Op.UPDATE
        return (Op.CREATE if first is Op.CREATE else Op.UPDATE).value, entity.to_payload(row)

    def resolve(self, conn: Connection, conflict_id: int, choice: str | dict[str, Any]) -> None:
        """``choice``: "local", "remote", or a merged record (dict) to keep and push."""
        record = self._conflicts.get(conn, conflict_id)
        if record is None:
            raise NotFoundError("conflict", conflict_id)
        if record["status"] != ConflictStatus.OPEN:
            raise ConflictStateError(f"conflict {conflict_id} is already {record['status']}")
        if not (isinstance(choice, dict) or choice in ("local", "remote")):
            raise ConflictStateError("choice must be 'local', 'remote' or a merged record")
        entity = self._registry[record["resource"]]
        entity_id = record["entity_id"]
        remote = RemoteSide(record["remote_version"], record["remote_deleted"], record["remote_data"], None)
        local = self._local(conn, entity, entity_id)
        now = self._now()
        if choice == "remote":
            self._take_remote(conn, entity, entity_id, remote, local.row is not None, now)
            self._outbox.delete(conn, [i["id"] for i in local.items])
            resolution = "remote"
        else:
            exists = local.row is not None
            if isinstance(choice, dict):
                if not exists:
                    raise ConflictStateError("a merged record needs the local row; choose 'remote' or 'local'")
                self._entities.write_local(conn, entity, entity_id, choice, now)
            self._requeue_local(conn, entity, entity_id, remote, local.items, exists, now)
            resolution = "merged" if isinstance(choice, dict) else "local"
        self._conflicts.resolve(conn, conflict_id, resolution, now)
        self._logs.add(conn, LogKind.RESOLVE, now, resource=entity.resource, entity_id=entity_id,
                       detail=f"conflict #{conflict_id} resolved: {resolution}")

