"""Change capture: every insert/update/delete of a tracked row, made through a SQLAlchemy session,
writes an outbox row in the same flush, hence in the same transaction. A rollback leaves nothing behind;
a crash after commit loses nothing.

Writers that bypass the ORM call ``enqueue(conn, ...)`` in their own transaction. ORM bulk
``update()``/``delete()`` statements on a tracked model would bypass capture silently, so they are refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from posync.errors import ConfigurationError
from posync.models.enums import ItemStatus, Op, SyncStatus
from posync.models.outbox import OutboxItem
from posync.registry import Registry, TrackedEntity

__all__ = ["ChangeCapture", "enqueue"]

OUTBOX = OutboxItem.__table__  # type: ignore[attr-defined]
_DELETE_BASES = "posync.delete_bases"


def _row(resource: str, entity_id: str, op: Op, version: int | None, base: int | None, now: float,
         changed_at: datetime) -> dict[str, Any]:
    return {
        "resource": resource, "entity_id": entity_id, "op": op.value, "entity_version": version,
        "base_version": base, "status": ItemStatus.PENDING.value, "attempts": 0, "available_at": now,
        "changed_at": changed_at,
    }


def enqueue(conn: Connection, resource: str, entity_ids: Iterable[str], op: Op | str, *,
            clock: Callable[[], float] = time.time) -> int:
    """Queue changes made without the ORM (raw SQL, another language's writer). Call it inside the
    transaction that made the change. The pushed data is read from the row when the change is sent."""
    now = clock()
    changed_at = datetime.fromtimestamp(now, UTC)
    rows = [_row(resource, str(eid), Op(op), None, None, now, changed_at) for eid in entity_ids]
    if rows:
        conn.execute(OUTBOX.insert(), rows)
    return len(rows)


class ChangeCapture:
    """Session hooks that write outbox rows. ``attach`` it to the host's sessionmaker (or Session class)."""

    def __init__(self, registry: Registry, clock: Callable[[], float] = time.time) -> None:
        self._registry = registry
        self._clock = clock
        self._targets: list[Any] = []

    def attach(self, target: Any) -> None:
        event.listen(target, "before_flush", self._before_flush)
        event.listen(target, "after_flush", self._after_flush)
        event.listen(target, "do_orm_execute", self._refuse_bulk_writes)
        self._targets.append(target)

    def detach(self) -> None:
        for target in self._targets:
            event.remove(target, "before_flush", self._before_flush)
            event.remove(target, "after_flush", self._after_flush)
            event.remove(target, "do_orm_execute", self._refuse_bulk_writes)
        self._targets.clear()

    def _pushing(self, obj: Any) -> TrackedEntity | None:
        entity = self._registry.for_object(obj)
        return entity if entity is not None and entity.direction.pushes else None

    def _before_flush(self, session: Session, _ctx: UOWTransaction, _instances: Any) -> None:
        now = datetime.fromtimestamp(self._clock(), UTC)
        for obj in session.new:  # defaults already say pending + creation time; only fix a stale copy
            if obj.sync_status != SyncStatus.PENDING.value and self._pushing(obj) is not None:
                obj.sync_status = SyncStatus.PENDING.value
        for obj in session.dirty:
            if self._pushing(obj) is not None and session.is_modified(obj, include_collections=False):
                obj.sync_status = SyncStatus.PENDING.value
                obj.updated_at = now
        # A delete's base is HO's version as the database has it now, not as this session last saw it:
        # a push may have completed since. FOR UPDATE holds the row so the push cannot slip in between.
        by_entity: dict[TrackedEntity, list[Any]] = {}
        for obj in session.deleted:
            entity = self._pushing(obj)
            if entity is not None:
                by_entity.setdefault(entity, []).append(getattr(obj, entity.pk.name))
        bases: dict[tuple[str, str], int | None] = {}
        conn = session.connection() if by_entity else None
        for entity, pks in by_entity.items():
            assert conn is not None
            cv = entity.table.c.cloud_version
            stmt = sa.select(entity.pk, cv).where(entity.pk.in_(pks))
            if conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update()
            for pk, cloud_version in conn.execute(stmt):
                bases[(entity.resource, str(pk))] = cloud_version
        session.info[_DELETE_BASES] = bases

    def _after_flush(self, session: Session, _ctx: UOWTransaction) -> None:
        now = self._clock()
        rows: list[dict[str, Any]] = []
        for obj in session.new:
            entity = self._pushing(obj)
            if entity is not None:
                rows.append(_row(entity.resource, entity.entity_id(obj), Op.CREATE, obj.version, None, now,
                                 obj.updated_at))
        for obj in session.dirty:
            entity = self._pushing(obj)
            if entity is not None and session.is_modified(obj, include_collections=False):
                rows.append(_row(entity.resource, entity.entity_id(obj), Op.UPDATE, obj.version,
                                 obj.cloud_version, now, obj.updated_at))
        bases = session.info.pop(_DELETE_BASES, {})
        for obj in session.deleted:
            entity = self._pushing(obj)
            if entity is not None:
                eid = entity.entity_id(obj)
                rows.append(_row(entity.resource, eid, Op.DELETE, obj.version,
                                 bases.get((entity.resource, eid), obj.cloud_version), now,
                                 datetime.fromtimestamp(now, UTC)))
        if rows:
            session.connection().execute(OUTBOX.insert(), rows)

    def _refuse_bulk_writes(self, state: ORMExecuteState) -> None:
        if not (state.is_update or state.is_delete):
            return
        for mapper in state.all_mappers:
            entity = self._registry.for_model(mapper.class_)
            if entity is not None and entity.direction.pushes:
                raise ConfigurationError(
                    f"bulk {'UPDATE' if state.is_update else 'DELETE'} on tracked {entity.resource} would "
                    "bypass change capture; change rows through the session, or write with Core and call "
                    "posync.enqueue() in the same transaction"
                )
