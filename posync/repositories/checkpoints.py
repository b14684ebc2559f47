"""Pull checkpoints: saved in the caller's transaction, the one that applied the page."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping

from posync.models.checkpoint import Checkpoint
from posync.repositories.errors import storage_errors

__all__ = ["CheckpointRepository"]

T = Checkpoint.__table__  # type: ignore[attr-defined]


@storage_errors
class CheckpointRepository:
    def get(self, conn: Connection, resource: str) -> RowMapping | None:
        return conn.execute(sa.select(T).where(T.c.resource == resource)).mappings().first()

    def save(self, conn: Connection, resource: str, **values: Any) -> None:
        """Insert or update in one statement: two syncers saving a resource's first checkpoint at once
        (``single_syncer=False``) must not meet on its primary key."""
        if conn.dialect.name in ("postgresql", "sqlite"):
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            stmt = insert(T).values(resource=resource, **values)
            conn.execute(stmt.on_conflict_do_update(index_elements=[T.c.resource], set_=values))
            return
        res = conn.execute(T.update().where(T.c.resource == resource).values(**values))
        if not res.rowcount:
            conn.execute(T.insert().values(resource=resource, **values))

    def all(self, conn: Connection) -> list[RowMapping]:
        return list(conn.execute(sa.select(T).order_by(T.c.resource)).mappings())
