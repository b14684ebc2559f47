"""The reference HO's tables (SQLAlchemy Core, prefixed ``ho_``, on SQLite or PostgreSQL) and the record
value read out of them.

Tables::

    ho_records      (resource, id) -> version, data, deleted, updated_at, change_seq   (tombstones included)
    ho_counter      one row per counter; "change_seq" is the global change sequence
    ho_resources    per resource: last_seq (for /version/) and purged_seq (the tombstone horizon)
    ho_idempotency  UNIQUE (outlet_id, idempotency_key) -> request_hash, result     (applied changes only)
    ho_apply_log    append-only audit: one row each time a key was applied (for exactly-once assertions)
    ho_usage        append-only usage records (POST /sync/usage/)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

__all__ = [
    "REC_COLS",
    "SEQ",
    "HORecord",
    "apply_log",
    "counter",
    "idempotency",
    "iso",
    "metadata",
    "records",
    "resources",
    "usage",
]

metadata = sa.MetaData()
_S = sa.String

records = sa.Table(
    "ho_records",
    metadata,
    sa.Column("resource", _S(64), primary_key=True),
    sa.Column("id", _S(255), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("data", sa.JSON, nullable=True),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("updated_at", _S(40), nullable=False),
    sa.Column("change_seq", sa.BigInteger, nullable=False),
    sa.Index("ix_ho_records_seq", "resource", "change_seq"),
    # the seed profile's (and the legacy) updated_since + offset paging, as an HO's ORM would index it
    sa.Index("ix_ho_records_live", "resource", "deleted", "updated_at", "id"),
)
counter = sa.Table(
    "ho_counter",
    metadata,
    sa.Column("name", _S(32), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)
resources = sa.Table(
    "ho_resources",
    metadata,
    sa.Column("resource", _S(64), primary_key=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("purged_seq", sa.BigInteger, nullable=False),
)
idempotency = sa.Table(
    "ho_idempotency",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("outlet_id", _S(255), nullable=False),
    sa.Column("idempotency_key", _S(255), nullable=False),
    sa.Column("request_hash", _S(64), nullable=False),
    sa.Column("result", sa.JSON, nullable=False),
    sa.Column("created_at", _S(40), nullable=False),
    sa.UniqueConstraint("outlet_id", "idempotency_key", name="uq_ho_idempotency_outlet_key"),
)
apply_log = sa.Table(
    "ho_apply_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("outlet_id", _S(255), nullable=False),
    sa.Column("idempotency_key", _S(255), nullable=False),
    sa.Column("resource", _S(64), nullable=False),
    sa.Column("entity_id", _S(255), nullable=False),
    sa.Column("change_seq", sa.BigInteger, nullable=True),
    sa.Column("applied_at", _S(40), nullable=False),
    # Unindexed on purpose: written on every push, read only by test assertions.
)
usage = sa.Table(
    "ho_usage",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("outlet_id", _S(255), nullable=False),
    sa.Column("idempotency_key", _S(255), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("received_at", _S(40), nullable=False),
)

SEQ = "change_seq"  # the ho_counter row every writer locks
REC_COLS = (records.c.id, records.c.version, records.c.deleted, records.c.data, records.c.updated_at,
            records.c.change_seq)


@dataclass(frozen=True, slots=True)
class HORecord:
    resource: str
    id: str
    version: int
    data: dict[str, Any] | None
    deleted: bool
    updated_at: str
    change_seq: int

    def as_pull(self) -> dict[str, Any]:
        """The record as a pull page / webhook carries it: data fields plus id, version, updated_at."""
        return {**(self.data or {}), "id": self.id, "version": self.version, "updated_at": self.updated_at}

    def as_current(self) -> dict[str, Any]:
        """The record as a push ``conflict`` result carries it."""
        return {"id": self.id, "version": self.version, "deleted": self.deleted,
                "updated_at": self.updated_at, "data": self.data}

    def as_tombstone(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "deleted_at": self.updated_at}


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="microseconds")
