"""The listing's statements: HO's manifest pages into ``posync_photo`` rows, and HO's deletes marked."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from posync.models.photo import LocalPhoto, PhotoSyncStatus, RemotePhoto
from posync.repositories import driver
from posync.repositories.photos.base import META, PHOTOS, bind_processors, bound, chunks, on_driver

__all__ = ["all_ids", "insert_listed", "insert_refused", "insert_rows", "local_states", "mark_refused", "tombstone",
           "update_rows"]

# local_states reads the driver's rows by position (no SQLAlchemy row objects: a page is a thousand ids);
# the positions are named here, once
_STATE = ("id", *META, "stored_key", "stored_checksum", "sync_status", "sync_error", "ho_deleted_at")
_META = slice(1, 1 + len(META))
_ID, _PRODUCT, _KEY, _CHECKSUM = (_STATE.index(n) for n in ("id", "product_id", "object_key", "checksum"))
_STORED_KEY = _STATE.index("stored_key")
_results: dict[str, list[tuple[int, Any]]] = {}


def local_states(conn: Connection, ids: Sequence[str]) -> dict[str, LocalPhoto]:
    """The rows of these listed photos (on the driver: a page's thousand ids, no SQLAlchemy row processing
    but each column's own result conversion)."""
    dialect = conn.dialect
    convert = _results.get(dialect.name)
    if convert is None:
        processors = (PHOTOS.c[n].type.dialect_impl(dialect).result_processor(dialect, None) for n in _STATE)
        convert = _results[dialect.name] = [(n, f) for n, f in enumerate(processors) if f is not None]
    out: dict[str, LocalPhoto] = {}
    sql = f"SELECT {', '.join(_STATE)} FROM {PHOTOS.name} WHERE id IN ({{}})"
    for raw in driver.fetch_in(conn, sql, list(ids)):
        row = list(raw)
        for n, f in convert:
            row[n] = f(row[n])
        meta = tuple(v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v
                     for v in row[_META])  # SQLite reads timestamps back naive (they are UTC)
        stored_key, stored_checksum, status, error, deleted = row[_STORED_KEY:]
        out[row[_ID]] = LocalPhoto(row[_ID], row[_PRODUCT], row[_KEY], row[_CHECKSUM], meta, stored_key,
                                   stored_checksum, status, error, deleted is not None)
    return out


_ALL = tuple(c.name for c in PHOTOS.columns)
_LISTED = ("id", *META, "stored_key", "stored_checksum", "last_sync_at", "sync_status", "sync_error", "attempts",
           "next_attempt_at", "ho_deleted_at")  # insert_listed's tuple, in this order
_ALL_SET = frozenset(_ALL)
_ROW = operator.itemgetter(*_ALL)


def insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """New rows; each names every column (the listing's do)."""
    if not rows:
        return
    if not (on_driver(conn) and all(r.keys() == _ALL_SET for r in rows)):
        conn.execute(PHOTOS.insert(), rows)
        return
    q = conn.dialect.identifier_preparer
    converted = [(n, b) for n, b in enumerate(bind_processors(conn, _ALL)) if b is not None]
    sql = (f"INSERT INTO {q.format_table(PHOTOS)} ({', '.join(q.quote(c) for c in _ALL)}) "
           f"VALUES ({', '.join('?' for _ in _ALL)})")
    values = []
    for r in rows:
        row = list(_ROW(r))
        for n, b in converted:
            if row[n] is not None:
                row[n] = b(row[n])
        values.append(row)
    driver.executemany(conn, sql, values)


def insert_listed(conn: Connection, new: Sequence[tuple[RemotePhoto, str, str | None]]) -> None:
    """Rows for photos the outlet never had: ``(photo, sync_status, sync_error)``, nothing stored yet."""
    if not new:
        return
    if not on_driver(conn):
        insert_rows(conn, [{"id": p.id, **p.meta(), "stored_key": None, "stored_checksum": None,
                            "last_sync_at": None, "sync_status": status, "sync_error": error, "attempts": 0,
                            "next_attempt_at": None, "ho_deleted_at": None} for p, status, error in new])
        return
    q = conn.dialect.identifier_preparer
    when, flag = bind_processors(conn, ("created_at", "is_primary"))
    sql = (f"INSERT INTO {q.format_table(PHOTOS)} ({', '.join(q.quote(c) for c in _LISTED)}) "
           f"VALUES ({', '.join('?' for _ in _LISTED)})")
    driver.executemany(conn, sql, [
        (p.id, p.product_id, p.object_key, p.filename, p.size, p.content_type, p.checksum, p.version,
         bound(flag, p.is_primary), p.sort_order, bound(when, p.created_at), bound(when, p.updated_at),
         p.image_url, None, None, None, status, error, 0, None, None) for p, status, error in new])


def insert_refused(conn: Connection, refused: Sequence[tuple[str, str, datetime | None]]) -> None:
    """Rows for photos the outlet never had that the listing refused: ``(id, sync_error, updated_at)``,
    ``failed``. Nothing else of HO's element is kept: its fields did not fit or its key could escape the store
    (an empty key and product: never served, never fetched, never deleted from the store)."""
    insert_rows(conn, [{"id": i, "product_id": "", "object_key": "", "filename": "", "size": 0,
                        "content_type": "application/octet-stream", "checksum": "", "version": 0,
                        "is_primary": False, "sort_order": 0, "created_at": None, "updated_at": at, "image_url": None,
                        "stored_key": None, "stored_checksum": None, "last_sync_at": None,
                        "sync_status": PhotoSyncStatus.FAILED.value, "sync_error": error[:500], "attempts": 0,
                        "next_attempt_at": None, "ho_deleted_at": None} for i, error, at in refused])


def mark_refused(conn: Connection, refused: Sequence[tuple[str, str]]) -> None:
    """Rows the outlet has whose new listing was refused: ``(id, sync_error)``. ``failed``; the metadata and
    the stored bytes stay as they were (the last good version stays servable); listed, so not deleted at HO."""
    update_rows(conn, [{"b_id": i, "sync_status": PhotoSyncStatus.FAILED.value, "sync_error": error[:500],
                        "ho_deleted_at": None} for i, error in refused])


def update_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Each row: ``b_id`` plus the columns to set (all rows of one call set the same columns)."""
    by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        by_shape.setdefault(tuple(sorted(k for k in row if k != "b_id")), []).append(row)
    for shape, group in by_shape.items():
        stmt = PHOTOS.update().where(PHOTOS.c.id == sa.bindparam("b_id")).values(
            {name: sa.bindparam(name) for name in shape})
        conn.execute(stmt, group)


def tombstone(conn: Connection, ids: Iterable[str], now: datetime) -> int:
    """HO deleted these photos: marked, and removed after an error-free pass (under the delete cap)."""
    done = 0
    for chunk in chunks(list(ids)):
        done += conn.execute(PHOTOS.update().where(PHOTOS.c.id.in_(chunk), PHOTOS.c.ho_deleted_at.is_(None))
                             .values(ho_deleted_at=now)).rowcount
    return done


def all_ids(conn: Connection) -> set[str]:
    return set(conn.execute(sa.select(PHOTOS.c.id)).scalars())
