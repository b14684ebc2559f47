"""The host's tracked tables, as posync touches them: read rows to push, write HO's records.

posync writes here with Core statements, so its own writes are never captured as local changes.
Writing HO's data bumps ``version``: a host session holding the old version then gets a stale-write
error instead of silently overwriting what HO sent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from posync.models.enums import SyncStatus
from posync.registry import TrackedEntity
from posync.repositories.outbox import driver_executemany

__all__ = ["EntityRepository"]

_CHUNK = 500


class EntityRepository:
    def rows(self, conn: Connection, entity: TrackedEntity, entity_ids: Iterable[str], *,
             for_update: bool = False) -> dict[str, dict[str, Any]]:
        ids = [entity.pk_value(i) for i in entity_ids]
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), _CHUNK):
            stmt = sa.select(entity.table).where(entity.pk.in_(sa.bindparam("ids", expanding=True)))
            if for_update and conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update()
            result = conn.execute(stmt, {"ids": ids[i : i + _CHUNK]})
            keys = list(result.keys())
            for values in result:
                row = dict(zip(keys, values, strict=True))
                out[str(row[entity.pk.name])] = row
        return out

    def mark_pushed(self, conn: Connection, entity: TrackedEntity, accepted: Sequence[dict[str, Any]]) -> None:
        """HO accepted changes: record its version; the row is synced unless changed again meanwhile.
        Each dict: entity_id, cloud_version, pushed_version. A version older than one already applied
        (a pull got there first) changes nothing."""
        if not accepted:
            return
        q = conn.dialect.identifier_preparer.quote
        table, pk = q(entity.table.name), q(entity.pk.name)
        # one driver-level executemany: this runs for every accepted change
        sql = (f"UPDATE {table} SET cloud_version = ?, sync_status = CASE WHEN version = ? THEN "
               f"'{SyncStatus.SYNCED.value}' ELSE sync_status END "
               f"WHERE {pk} = ? AND (cloud_version IS NULL OR cloud_version < ?)")
        driver_executemany(conn, sql, [(a["cloud_version"], a["pushed_version"], entity.pk_value(a["entity_id"]),
                                        a["cloud_version"]) for a in accepted])

    def set_status(self, conn: Connection, entity: TrackedEntity, entity_id: str, status: SyncStatus,
                   *, cloud_version: int | None = None) -> None:
        values: dict[str, Any] = {"sync_status": status.value}
        t = entity.table
        if cloud_version is not None:
            values["cloud_version"] = sa.case(
                (sa.or_(t.c.cloud_version.is_(None), t.c.cloud_version < cloud_version), cloud_version),
                else_=t.c.cloud_version)
        conn.execute(t.update().where(entity.pk == entity.pk_value(entity_id)).values(**values))

    def write_remote(self, conn: Connection, entity: TrackedEntity, records: Sequence[dict[str, Any]],
                     existing: set[str], now: datetime) -> None:
        """Upsert HO records (already decided to apply). ``existing``: ids that have a local row."""
        inserts: list[dict[str, Any]] = []
        updates: dict[frozenset[str], list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            values = entity.from_remote(record)
            values.setdefault("updated_at", now)
            values["cloud_version"] = record["version"]
            values["sync_status"] = SyncStatus.SYNCED.value
            if str(record["id"]) in existing:
                updates[frozenset(values)].append(values)
            else:
                values["version"] = 1
                inserts.append(values)
        t = entity.table
        pk = entity.pk.name
        for columns, rows in updates.items():
            stmt = t.update().where(entity.pk == sa.bindparam("b_pk")).values(
                {c: sa.bindparam(f"v_{c}") for c in columns if c != pk} | {"version": t.c.version + 1})
            conn.execute(stmt, [{"b_pk": r[pk]} | {f"v_{c}": r[c] for c in columns if c != pk} for r in rows])
        if inserts:
            by_shape: dict[frozenset[str], list[dict[str, Any]]] = defaultdict(list)
            for row in inserts:
                by_shape[frozenset(row)].append(row)
            for rows in by_shape.values():
                conn.execute(t.insert(), rows)

    def write_local(self, conn: Connection, entity: TrackedEntity, entity_id: str, data: dict[str, Any],
                    now: datetime) -> None:
        """Write a merged record as a local change (version bumped, status pending)."""
        values = entity.from_remote(data)
        values.pop(entity.pk.name, None)
        values.update(updated_at=now, sync_status=SyncStatus.PENDING.value, version=entity.table.c.version + 1)
        conn.execute(entity.table.update().where(entity.pk == entity.pk_value(entity_id)).values(**values))

    def delete(self, conn: Connection, entity: TrackedEntity, entity_ids: Sequence[str]) -> None:
        ids = [entity.pk_value(i) for i in entity_ids]
        for i in range(0, len(ids), _CHUNK):
            conn.execute(entity.table.delete().where(entity.pk.in_(ids[i : i + _CHUNK])))
