"""Photo replication's tables and the values the layers pass about (a photo HO lists, a local row's state).

``posync_photo``            one row per HO product photo: seed 000/001's fields, plus where the bytes stand
                            on this edge (``stored_key``/``stored_checksum``: what the store holds now, which
                            stays servable while a newer version is pending), the sync state and retry clock,
                            and HO's delete waiting for an error-free pass (``ho_deleted_at``).
``posync_photo_checkpoint`` per HO source: HO's ``sync_timestamp`` to ask from next, and the last passes.
``posync_photo_blob``       the database store (seed 000's BYTEA/BLOB): one row per object, and its bytes in
``posync_photo_chunk``      1 MiB chunks, so neither a write nor a read holds a whole photo in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlmodel import Field

from posync.models.base import PosyncModel

__all__ = ["INVALID", "REFUSALS", "UNSAFE_KEY", "WAITING", "LocalPhoto", "PhotoBlob", "PhotoCheckpoint", "PhotoChunk",
           "PhotoRecord", "PhotoSyncStatus", "RemotePhoto", "WorkItem", "is_refusal"]


UNSAFE_KEY = "unsafe_key"  # the reason a photo whose object_key could escape the store fails with
INVALID = "invalid"  # "invalid: size", "invalid: checksum, size": the fields that do not fit


WAITING = "waiting for product"
REFUSALS = (UNSAFE_KEY, f"{INVALID}:")  # sync_error prefixes of a photo the listing refused (issue 15)


def is_refusal(error: str | None) -> bool:
    """A failed row whose error is a listing refusal: HO's row was malformed or its key unsafe. No download
    can fix that; the listing clears it once HO lists the photo right."""
    return error is not None and error.startswith(REFUSALS)


class LocalPhoto(NamedTuple):
    """What the outlet knows of a photo, as the listing needs it."""

    id: str
    product_id: str
    object_key: str
    checksum: str
    meta: tuple[object, ...]  # the metadata columns, in RemotePhoto.meta() order
    stored_key: str | None
    stored_checksum: str | None
    sync_status: str
    sync_error: str | None
    tombstoned: bool


class WorkItem(NamedTuple):
    """A photo that needs bytes under ``object_key``."""

    id: str
    product_id: str
    object_key: str
    checksum: str
    size: int
    content_type: str
    image_url: str | None
    stored_key: str | None
    stored_checksum: str | None
    attempts: int
    sync_status: str


@dataclass(frozen=True, slots=True)
class RemotePhoto:
    """One photo as HO describes it (either API). ``checksum`` is the MD5 of the bytes, lower-case."""

    id: str
    product_id: str
    object_key: str
    filename: str
    size: int
    content_type: str
    checksum: str
    version: int
    is_primary: bool
    sort_order: int
    updated_at: datetime | None
    image_url: str | None
    created_at: datetime | None = None

    def meta(self) -> dict[str, Any]:
        """The metadata columns this photo sets on ``posync_photo``."""
        return {"product_id": self.product_id, "object_key": self.object_key, "filename": self.filename,
                "size": self.size, "content_type": self.content_type, "checksum": self.checksum,
                "version": self.version, "is_primary": self.is_primary, "sort_order": self.sort_order,
                "created_at": self.created_at, "updated_at": self.updated_at, "image_url": self.image_url}


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


class PhotoRecord(PosyncModel, table=True):
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


class PhotoCheckpoint(PosyncModel, table=True):
    __tablename__ = "posync_photo_checkpoint"

    source: str = Field(primary_key=True, max_length=200)
    updated_since: datetime | None = Field(default=None, sa_column=_tz())
    last_incremental_at: datetime | None = Field(default=None, sa_column=_tz())
    last_full_at: datetime | None = Field(default=None, sa_column=_tz())
    last_summary: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))


class PhotoBlob(PosyncModel, table=True):
    __tablename__ = "posync_photo_blob"

    object_key: str = Field(primary_key=True, max_length=500)
    size: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))
    md5: str = Field(max_length=32)
    content_type: str = Field(default="application/octet-stream", max_length=100)
    chunks: int = 0
    stored_at: datetime | None = Field(default=None, sa_column=_tz())


class PhotoChunk(PosyncModel, table=True):
    __tablename__ = "posync_photo_chunk"

    object_key: str = Field(primary_key=True, max_length=500)
    seq: int = Field(primary_key=True)
    data: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
