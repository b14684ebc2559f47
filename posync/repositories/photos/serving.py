"""What the edge serves (``posync.http.photos``): a product's or a photo's URL parts, and a key's servable bytes."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from posync.repositories.photos.base import PHOTOS

__all__ = ["PhotoLink", "ServedPhoto", "photo_link", "product_link", "servable"]


class PhotoLink(NamedTuple):
    """What a photo's URL is made of: the local copy, if any, else HO's ``image_url``."""

    stored_key: str | None
    stored_checksum: str | None
    image_url: str | None


_LINK = (PHOTOS.c.stored_key, PHOTOS.c.stored_checksum, PHOTOS.c.image_url)


def product_link(conn: Connection, product_id: str) -> PhotoLink | None:
    """The primary photo (else the first by ``sort_order``) of a product HO has not deleted."""
    row = conn.execute(sa.select(*_LINK).where(PHOTOS.c.product_id == product_id, PHOTOS.c.ho_deleted_at.is_(None))
                       .order_by(PHOTOS.c.is_primary.desc(), PHOTOS.c.sort_order, PHOTOS.c.id).limit(1)).first()
    return None if row is None else PhotoLink._make(row)


def photo_link(conn: Connection, photo_id: str) -> PhotoLink | None:
    row = conn.execute(sa.select(*_LINK).where(PHOTOS.c.id == photo_id)).first()
    return None if row is None else PhotoLink._make(row)


class ServedPhoto(NamedTuple):
    content_type: str
    stored_checksum: str
    size: int
    filename: str
    last_sync_at: datetime | None


def servable(conn: Connection, key: str) -> ServedPhoto | None:
    """The photo whose synced bytes are under ``key`` (never a stray or partial file: the row must say so)."""
    row = conn.execute(sa.select(*(PHOTOS.c[name] for name in ServedPhoto._fields))
                       .where(PHOTOS.c.object_key == key, PHOTOS.c.stored_key == key,
                              PHOTOS.c.stored_checksum.is_not(None)).limit(1)).first()
    return None if row is None else ServedPhoto._make(row)
