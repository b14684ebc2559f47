"""``posync_photo`` and its checkpoint: the statements the photo services run, named by intent.

Each function takes the caller's connection (and so its transaction). SQLAlchemy errors are translated
into StorageError at the service boundary (:func:`translating`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from posync.errors import StorageError
from posync.models.photo import PhotoCheckpoint, PhotoRecord, PhotoSyncStatus
from posync.photos.decide import LocalPhoto, WorkItem

__all__ = ["CHECKPOINTS", "PHOTOS", "translating"]

PHOTOS = PhotoRecord.__table__  # type: ignore[attr-defined]
CHECKPOINTS = PhotoCheckpoint.__table__  # type: ignore[attr-defined]
META = ("product_id", "object_key", "filename", "size", "content_type", "checksum", "version", "is_primary",
        "sort_order", "created_at", "updated_at", "image_url")
_IN_BATCH = 500


@contextmanager
def translating(operation: str) -> Iterator[None]:
    try:
        yield
    except SQLAlchemyError as exc:
        raise StorageError(f"photos: {operation}", type(exc).__name__) from exc


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _IN_BATCH):
        yield values[start:start + _IN_BATCH]


def _meta(row: Any) -> tuple[object, ...]:
    values = []
    for name in META:
        v = getattr(row, name)
        if isinstance(v, datetime) and v.tzinfo is None:  # SQLite reads timestamps back naive (they are UTC)
            v = v.replace(tzinfo=UTC)
        values.append(v)
    return tuple(values)


# -- the listing ------------------------------------------------------------------------------------------


def local_states(conn: Connection, ids: Sequence[str]) -> dict[str, LocalPhoto]:
    out: dict[str, LocalPhoto] = {}
    cols = [PHOTOS.c[n] for n in ("id", *META, "stored_key", "stored_checksum", "sync_status", "sync_error",
                                  "ho_deleted_at")]
    for chunk in _chunks(list(ids)):
        for row in conn.execute(sa.select(*cols).where(PHOTOS.c.id.in_(chunk))):
            out[row.id] = LocalPhoto(row.id, row.product_id, row.object_key, row.checksum, _meta(row),
                                     row.stored_key, row.stored_checksum, row.sync_status, row.sync_error,
                                     row.ho_deleted_at is not None)
    return out


def insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(PHOTOS.insert(), rows)


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
    done = 0
    for chunk in _chunks(list(ids)):
        done += conn.execute(PHOTOS.update().where(PHOTOS.c.id.in_(chunk), PHOTOS.c.ho_deleted_at.is_(None))
                             .values(ho_deleted_at=now)).rowcount
    return done


def all_ids(conn: Connection) -> set[str]:
    return set(conn.execute(sa.select(PHOTOS.c.id)).scalars())


# -- the transfers ----------------------------------------------------------------------------------------

_WORK = (PhotoSyncStatus.PENDING.value, PhotoSyncStatus.SYNCING.value, PhotoSyncStatus.FAILED.value)


def work(conn: Connection, now: datetime, *, include_backoff: bool = False) -> list[WorkItem]:
    """Photos that need bytes: pending, left syncing by a crash, or failed and due again."""
    query = sa.select(PHOTOS.c.id, PHOTOS.c.product_id, PHOTOS.c.object_key, PHOTOS.c.checksum, PHOTOS.c.size,
                      PHOTOS.c.content_type, PHOTOS.c.image_url, PHOTOS.c.stored_key, PHOTOS.c.stored_checksum,
                      PHOTOS.c.attempts, PHOTOS.c.sync_status).where(PHOTOS.c.sync_status.in_(_WORK), PHOTOS.c.ho_deleted_at.is_(None))
    if not include_backoff:
        query = query.where(sa.or_(PHOTOS.c.sync_status != PhotoSyncStatus.FAILED.value,
                                   PHOTOS.c.next_attempt_at.is_(None), PHOTOS.c.next_attempt_at <= now))
    return [WorkItem(*row) for row in conn.execute(query.order_by(PHOTOS.c.id))]


def set_status(conn: Connection, ids: Sequence[str], status: str, error: str | None = None) -> None:
    for chunk in _chunks(list(ids)):
        conn.execute(PHOTOS.update().where(PHOTOS.c.id.in_(chunk)).values(sync_status=status, sync_error=error))


def mark_synced(conn: Connection, done: Sequence[tuple[str, str, str]], now: datetime) -> None:
    """``(id, key, checksum)``: the store holds ``checksum``'s bytes under ``key``. A row whose checksum
    moved on meanwhile keeps its status (the newer bytes are still wanted)."""
    if not done:
        return
    conn.execute(PHOTOS.update().where(PHOTOS.c.id == sa.bindparam("b_id"))
                 .values(stored_key=sa.bindparam("b_key"), stored_checksum=sa.bindparam("b_sum"),
                         sync_status=sa.case((PHOTOS.c.checksum == sa.bindparam("b_sum"),
                                              PhotoSyncStatus.SYNCED.value), else_=PHOTOS.c.sync_status),
                         sync_error=None, attempts=0, next_attempt_at=None, last_sync_at=now),
                 [{"b_id": i, "b_key": k, "b_sum": s} for i, k, s in done])


def mark_failed(conn: Connection, failed: Sequence[tuple[str, str, datetime]]) -> None:
    """``(id, reason, next_attempt_at)``."""
    if not failed:
        return
    conn.execute(PHOTOS.update().where(PHOTOS.c.id == sa.bindparam("b_id"))
                 .values(sync_status=PhotoSyncStatus.FAILED.value, sync_error=sa.bindparam("b_err"),
                         attempts=PHOTOS.c.attempts + 1, next_attempt_at=sa.bindparam("b_next")),
                 [{"b_id": i, "b_err": e[:500], "b_next": n} for i, e, n in failed])


def sources_by_checksum(conn: Connection, checksums: Sequence[str]) -> dict[str, str]:
    """checksum -> a key where the store already holds those bytes (per the metadata)."""
    out: dict[str, str] = {}
    for chunk in _chunks(list(checksums)):
        rows = conn.execute(sa.select(PHOTOS.c.stored_checksum, PHOTOS.c.stored_key)
                            .where(PHOTOS.c.stored_checksum.in_(chunk), PHOTOS.c.stored_key.is_not(None)))
        for md5, key in rows:
            out.setdefault(md5, key)
    return out


def key_users(conn: Connection, key: str) -> set[str]:
    """Rows whose bytes are (or will be) under ``key``."""
    rows = conn.execute(sa.select(PHOTOS.c.id).where(sa.or_(PHOTOS.c.stored_key == key,
                                                             PHOTOS.c.object_key == key)))
    return set(rows.scalars())


# -- deletes, checkpoints, status ----------------------------------------------------------------------------


def tombstoned(conn: Connection) -> list[str]:
    return list(conn.execute(sa.select(PHOTOS.c.id).where(PHOTOS.c.ho_deleted_at.is_not(None))
                             .order_by(PHOTOS.c.id)).scalars())


def load_checkpoint(conn: Connection, source: str) -> Any:
    return conn.execute(sa.select(CHECKPOINTS).where(CHECKPOINTS.c.source == source)).first()


def save_checkpoint(conn: Connection, source: str, **values: Any) -> None:
    if conn.execute(CHECKPOINTS.update().where(CHECKPOINTS.c.source == source).values(**values)).rowcount == 0:
        conn.execute(CHECKPOINTS.insert().values(source=source, **values))


def counts(conn: Connection) -> dict[str, int]:
    out = {s.value: 0 for s in PhotoSyncStatus}
    for status, n in conn.execute(sa.select(PHOTOS.c.sync_status, sa.func.count()).group_by(PHOTOS.c.sync_status)):
        out[status] = int(n)
    out["waiting_product"] = int(conn.execute(sa.select(sa.func.count()).where(
        PHOTOS.c.sync_status == PhotoSyncStatus.PENDING.value, PHOTOS.c.sync_error == "waiting for product"))
        .scalar_one())
    out["deleted_at_ho"] = int(conn.execute(sa.select(sa.func.count()).where(PHOTOS.c.ho_deleted_at.is_not(None)))
                               .scalar_one())
    return out
