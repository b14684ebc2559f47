"""The columns a host table gets by inheriting ``Tracked``.

``version`` is the optimistic lock: SQLAlchemy's ``version_id_col`` adds ``WHERE version = :seen`` to every
UPDATE/DELETE of the row and bumps it, so a write based on a stale read fails instead of overwriting.
``cloud_version`` is HO's version of the row as last seen; ``sync_status`` is pending/synced/conflict/failed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import declared_attr
from sqlmodel import Field, SQLModel

from posync.models.enums import SyncStatus

__all__ = ["Tracked", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Tracked(SQLModel):
    version: int = Field(default=1, nullable=False)
    # BIGINT: against an HO without record versions posync derives them from HO's updated_at (microseconds)
    cloud_version: int | None = Field(default=None, sa_type=sa.BigInteger, nullable=True)
    sync_status: str = Field(default=SyncStatus.PENDING.value, max_length=12, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, nullable=False)

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        if "version" not in data:
            # left unset (SQLAlchemy numbers a new row 1): ``session.merge(Order(id=..., total=...))`` of an
            # object the host built then updates the row at whatever version it is, instead of failing
            # the optimistic lock on a version the host never meant to claim
            self.__dict__.pop("version", None)

    @declared_attr  # type: ignore[arg-type]
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"version_id_col": cls.__table__.c.version}  # type: ignore[attr-defined]


# Columns that posync itself maintains; they are not part of what an entity syncs.
BOOKKEEPING_COLUMNS = frozenset({"version", "cloud_version", "sync_status", "updated_at"})
