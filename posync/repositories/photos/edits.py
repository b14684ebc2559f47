"""Rows edited with their bytes (``posync.services.photos.ops``): a photo written or deleted, a product's or a
variant's photos found, a key prefix moved."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from posync.models.photo import PhotoSyncStatus, RemotePhoto
from posync.repositories.photos.base import PHOTOS

__all__ = ["PhotoKeys", "delete_row", "ids_of_product", "ids_under", "keys_of", "move_prefix", "photo_values",
           "record_stored"]


def record_stored(conn: Connection, photo: RemotePhoto, key: str, now: datetime) -> None:
    """The store holds ``photo``'s verified bytes under ``key``: its row says so, ``synced`` (made if missing)."""
    values = {**photo.meta(), "stored_key": key, "stored_checksum": photo.checksum,
              "sync_status": PhotoSyncStatus.SYNCED.value, "sync_error": None, "attempts": 0,
              "next_attempt_at": None, "last_sync_at": now, "ho_deleted_at": None}
    if conn.execute(PHOTOS.update().where(PHOTOS.c.id == photo.id).values(values)).rowcount == 0:
        conn.execute(PHOTOS.insert().values(id=photo.id, **values))


class PhotoKeys(NamedTuple):
    """Where a photo's bytes are (``stored_key``) and where HO wants them (``object_key``)."""

    stored_key: str | None
    object_key: str


def keys_of(conn: Connection, photo_id: str) -> PhotoKeys | None:
    row = conn.execute(sa.select(PHOTOS.c.stored_key, PHOTOS.c.object_key).where(PHOTOS.c.id == photo_id)).first()
    return None if row is None else PhotoKeys._make(row)


def delete_row(conn: Connection, photo_id: str) -> None:
    conn.execute(PHOTOS.delete().where(PHOTOS.c.id == photo_id))


def ids_of_product(conn: Connection, product_id: str) -> list[str]:
    return list(conn.execute(sa.select(PHOTOS.c.id).where(PHOTOS.c.product_id == product_id)).scalars())


def ids_under(conn: Connection, prefix: str) -> list[str]:
    """The photos whose key is under ``prefix`` (a variant's)."""
    return list(conn.execute(sa.select(PHOTOS.c.id).where(
        PHOTOS.c.object_key.startswith(prefix, autoescape=True))).scalars())


def move_prefix(conn: Connection, old: str, new: str) -> int:
    """Keys under ``old`` (HO's and the stored one) move under ``new``; returns the rows moved."""
    n = len(old)
    moved = 0
    for column in ("object_key", "stored_key"):
        col = PHOTOS.c[column]
        moved = max(moved, conn.execute(PHOTOS.update().where(col.startswith(old, autoescape=True)).values(
            {column: sa.literal(new) + sa.func.substr(col, n + 1)})).rowcount)
    return moved


def photo_values(conn: Connection, photo_id: str) -> dict[str, Any] | None:
    """A photo's whole row, by column name."""
    row = conn.execute(sa.select(PHOTOS).where(PHOTOS.c.id == photo_id)).mappings().first()
    return None if row is None else dict(row)
