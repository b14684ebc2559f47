"""The sync log: one row per batch or notable event, not per routine change."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from posync.models.enums import LogKind
from posync.models.log import SyncLogEntry
from posync.repositories.errors import storage_errors

__all__ = ["LogRepository"]

T = SyncLogEntry.__table__  # type: ignore[attr-defined]
_INSERT = T.insert()


@storage_errors
class LogRepository:
    def add(self, conn: Connection, kind: LogKind, at: datetime, *, resource: str | None = None,
            entity_id: str | None = None, count: int = 0, detail: str | None = None,
            duration_ms: float | None = None) -> None:
        # one statement object, values as parameters: SQLAlchemy compiles it once (values() baked into a
        # new statement cost a cache-key walk on every push batch)
        conn.execute(_INSERT, {"kind": kind.value, "at": at, "resource": resource, "entity_id": entity_id,
                               "count": count, "detail": detail, "duration_ms": duration_ms})

    def recent(self, conn: Connection, *, limit: int = 100, kind: str | None = None) -> list[RowMapping]:
        stmt = sa.select(T).order_by(T.c.id.desc()).limit(limit)
        if kind:
            stmt = stmt.where(T.c.kind == kind)
        return list(conn.execute(stmt).mappings())

    def last_at(self, conn: Connection, kind: LogKind) -> datetime | None:
        return conn.execute(sa.select(sa.func.max(T.c.at)).where(T.c.kind == kind.value)).scalar()
