"""The manual-conflict inbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from posync.models.conflict import ConflictRecord
from posync.models.enums import ConflictStatus
from posync.repositories.errors import storage_errors

__all__ = ["ConflictRepository"]

T = ConflictRecord.__table__  # type: ignore[attr-defined]
OPEN = ConflictStatus.OPEN.value


@storage_errors
class ConflictRepository:
    def record(self, conn: Connection, *, resource: str, entity_id: str, local_op: str,
               local_data: dict[str, Any] | None, remote_version: int, remote_deleted: bool,
               remote_data: dict[str, Any] | None, source: str, now: datetime) -> int:
        """Open a conflict, or refresh HO's side of the one already open for this entity."""
        open_id = conn.execute(sa.select(T.c.id).where(
            T.c.resource == resource, T.c.entity_id == entity_id, T.c.status == OPEN)).scalar()
        values = {"local_op": local_op, "local_data": local_data, "remote_version": remote_version,
                  "remote_deleted": remote_deleted, "remote_data": remote_data, "source": source}
        if open_id is not None:
            conn.execute(T.update().where(T.c.id == open_id).values(**values))
            return int(open_id)
        res = conn.execute(T.insert().values(resource=resource, entity_id=entity_id, status=OPEN,
                                             created_at=now, **values))
        return int(res.inserted_primary_key[0])  # type: ignore[index]

    def get(self, conn: Connection, conflict_id: int) -> RowMapping | None:
        return conn.execute(sa.select(T).where(T.c.id == conflict_id)).mappings().first()

    def find(self, conn: Connection, *, status: str | None = OPEN, limit: int = 100) -> list[RowMapping]:
        stmt = sa.select(T).order_by(T.c.id).limit(limit)
        if status:
            stmt = stmt.where(T.c.status == status)
        return list(conn.execute(stmt).mappings())

    def resolve(self, conn: Connection, conflict_id: int, resolution: str, now: datetime) -> bool:
        res = conn.execute(T.update().where(T.c.id == conflict_id, T.c.status == OPEN)
                           .values(status=ConflictStatus.RESOLVED.value, resolution=resolution, resolved_at=now))
        return (res.rowcount or 0) == 1

    def count_open(self, conn: Connection) -> int:
        return int(conn.execute(sa.select(sa.func.count()).where(T.c.status == OPEN)).scalar() or 0)
