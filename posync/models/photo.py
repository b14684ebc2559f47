"""Photo replication's tables (posync.photos).

``posync_photo``            one row per HO product photo: seed 000/001's fields, plus where the bytes stand
                            on this edge (``stored_key``/``stored_checksum``: what the store holds now, which
                            stays servable while a newer version is pending), the sync state and retry clock,
                            and HO's delete waiting for an error-free pass (``ho_deleted_at``).
``posync_photo_checkpoint`` per HO source: HO's ``sync_timestamp`` to ask from next, and the last passes.
``posync_photo_blob``       the database store (seed 000's BYTEA/BLOB): one row per object, and its bytes in
``posync_photo_chunk``      1 MiB chunks, so neither a write nor a read holds a whole photo in memory.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

__all__ = ["PhotoBlob", "PhotoCheckpoint", "PhotoChunk", "PhotoRecord", "PhotoSyncStatus"]


class PhotoSyncStatus(StrEnum):
    """``pending``: bytes wanted (new, changed, or its product not here yet); ``syncing``: handed to a
    transfer (a crash leaves it so; the next pass takes it again); ``synced``: the store holds bytes with
    this row's checksum; ``failed``: the last attempt failed, ``sync_error`` says why, retried with backoff."""

    PENDING = "pending"
    SYNCING = "syncing"
    SYNCED = "synced"
    FAILED = "failed"


def _tz(nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(sa.DateTime(timezone=True), nullable=nullable)


class PhotoRecord(SQLModel, table=True):
    __tablename__ = "posync_photo"
    __table_args__ = (
        sa.Index("ix_posync_photo_product", "product_id", "is_primary"),
        sa.Index("ix_posync_photo_status", "sync_status", "next_attempt_at"),
        sa.Index("ix_posync_photo_checksum", "checksum"),
        sa.Index("ix_posync_photo_object_key", "object_key"),
        sa.Index("ix_posync_photo_last_sync", "last_sync_at"),
    )

    id: str = Field(primary_key=True, max_length=64)
    product_id: str = Field(max_length=64)
    object_key: str = Field(max_length=500)
    filename: str = Field(default="", max_length=255)
    size: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))
    content_type: str = Field(default="application/octet-stream", max_length=100)
    checksum: str = Field(max_length=64)
    version: int = 1
    is_primary: bool = False
    sort_order: int = 0
    created_at: datetime | None = Field(default=None, sa_column=_tz())
    updated_at: datetime | None = Field(default=None, sa_column=_tz())
    image_url: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    stored_key: str | None = Field(default=None, max_length=500)
    stored_checksum: str | None = Field(default=None, max_length=64)
    last_sync_at: datetime | None = Field(default=None, sa_column=_tz())
    sync_status: str = Field(default=PhotoSyncStatus.PENDING.value, max_length=20)
    sync_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_column=_tz())
    ho_deleted_at: datetime | None = Field(default=None, sa_column=_tz())


class PhotoCheckpoint(SQLModel, table=True):
    __tablename__ = "posync_photo_checkpoint"

    source: str = Field(primary_key=True, max_length=200)
    updated_since: datetime | None = Field(default=None, sa_column=_tz())
    last_incremental_at: datetime | None = Field(default=None, sa_column=_tz())
    last_full_at: datetime | None = Field(default=None, sa_column=_tz())
    last_summary: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))


class PhotoBlob(SQLModel, table=True):
    __tablename__ = "posync_photo_blob"

    object_key: str = Field(primary_key=True, max_length=500)
    size: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))
    md5: str = Field(max_length=32)
    content_type: str = Field(default="application/octet-stream", max_length=100)
    chunks: int = 0
    stored_at: datetime | None = Field(default=None, sa_column=_tz())


class PhotoChunk(SQLModel, table=True):
    __tablename__ = "posync_photo_chunk"

    object_key: str = Field(primary_key=True, max_length=500)
    seq: int = Field(primary_key=True)
    data: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
