"""``posync_photo`` and its checkpoint: the statements the photo services run, named by intent.

Each function takes the caller's connection (and so its transaction). SQLAlchemy errors are translated
into StorageError at the service boundary (:func:`translating`).

The two statements that run once per photo (the listing's inserts, the byte pass's ``mark_synced``) go to
the driver's ``executemany`` on SQLite with each column's own bind conversion, as the core's page apply
does (``posync/repositories/entities.py``): SQLAlchemy's per-row parameter processing was most of their
cost. psycopg's executemany is a round trip a row, so PostgreSQL keeps SQLAlchemy's batching.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from posync.errors import StorageError
from posync.models.photo import (
    REFUSALS,
    WAITING,
    LocalPhoto,
    PhotoCheckpoint,
    PhotoRecord,
    PhotoSyncStatus,
    RemotePhoto,
    WorkItem,
)
from posync.repositories import driver

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


# -- the listing ------------------------------------------------------------------------------------------


_STATE = ("id", *META, "stored_key", "stored_checksum", "sync_status", "sync_error", "ho_deleted_at")
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
                     for v in row[1:1 + len(META)])  # SQLite reads timestamps back naive (they are UTC)
        pid, product_id, key, checksum = row[0], row[1], row[2], row[6]
        stored_key, stored_checksum, status, error, deleted = row[1 + len(META):]
        out[pid] = LocalPhoto(pid, product_id, key, checksum, meta, stored_key, stored_checksum, status, error,
                              deleted is not None)
    return out


_ALL = tuple(c.name for c in PHOTOS.columns)
_LISTED = ("id", *META, "stored_key", "stored_checksum", "last_sync_at", "sync_status", "sync_error", "attempts",
           "next_attempt_at", "ho_deleted_at")  # insert_listed's tuple, in this order
_ALL_SET = frozenset(_ALL)
_ROW = operator.itemgetter(*_ALL)
_binds: dict[tuple[str, ...], list[Any]] = {}


def _bind_processors(conn: Connection, columns: Sequence[str]) -> list[Any]:
    dialect = conn.dialect
    key = (dialect.name, *columns)
    found = _binds.get(key)
    if found is None:
        found = _binds[key] = [PHOTOS.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
    return found


def _fast(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"


def insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """New rows; each names every column (the listing's do)."""
    if not rows:
        return
    if not (_fast(conn) and all(r.keys() == _ALL_SET for r in rows)):
        conn.execute(PHOTOS.insert(), rows)
        return
    q = conn.dialect.identifier_preparer
    converted = [(n, b) for n, b in enumerate(_bind_processors(conn, _ALL)) if b is not None]
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
    if not _fast(conn):
        insert_rows(conn, [{"id": p.id, **p.meta(), "stored_key": None, "stored_checksum": None,
                            "last_sync_at": None, "sync_status": status, "sync_error": error, "attempts": 0,
                            "next_attempt_at": None, "ho_deleted_at": None} for p, status, error in new])
        return
    q = conn.dialect.identifier_preparer
    when, flag = _bind_processors(conn, ("created_at", "is_primary"))
    sql = (f"INSERT INTO {q.format_table(PHOTOS)} ({', '.join(q.quote(c) for c in _LISTED)}) "
           f"VALUES ({', '.join('?' for _ in _LISTED)})")
    driver.executemany(conn, sql, [
        (p.id, p.product_id, p.object_key, p.filename, p.size, p.content_type, p.checksum, p.version,
         _bound(flag, p.is_primary), p.sort_order, _bound(when, p.created_at), _bound(when, p.updated_at),
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


def _bound(process: Any, value: Any) -> Any:
    return value if process is None or value is None else process(value)


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
_REFUSED = sa.and_(PHOTOS.c.sync_status == PhotoSyncStatus.FAILED.value,  # decide.is_refusal, in SQL
                   sa.or_(*(sa.func.coalesce(PHOTOS.c.sync_error, "").startswith(p, autoescape=True)
                            for p in REFUSALS)))


def work(conn: Connection, now: datetime, *, include_backoff: bool = False) -> list[WorkItem]:
    """Photos that need bytes: pending, left syncing by a crash, or failed and due again (not one the
    listing refused: no download fixes HO's row)."""
    query = sa.select(PHOTOS.c.id, PHOTOS.c.product_id, PHOTOS.c.object_key, PHOTOS.c.checksum, PHOTOS.c.size,
                      PHOTOS.c.content_type, PHOTOS.c.image_url, PHOTOS.c.stored_key, PHOTOS.c.stored_checksum,
                      PHOTOS.c.attempts, PHOTOS.c.sync_status).where(
        PHOTOS.c.sync_status.in_(_WORK), PHOTOS.c.ho_deleted_at.is_(None), sa.not_(_REFUSED))
    if not include_backoff:
        query = query.where(sa.or_(PHOTOS.c.sync_status != PhotoSyncStatus.FAILED.value,
                                   PHOTOS.c.next_attempt_at.is_(None), PHOTOS.c.next_attempt_at <= now))
    return [WorkItem(*row) for row in conn.execute(query.order_by(PHOTOS.c.id))]


def set_status(conn: Connection, ids: Sequence[str], status: str, error: str | None = None) -> None:
    driver.execute_in(conn, f"UPDATE {PHOTOS.name} SET sync_status = ?, sync_error = ? WHERE id IN ({{}})",
                      list(ids), before=(status, error))


def mark_synced(conn: Connection, done: Sequence[tuple[str, str, str]], now: datetime) -> None:
    """``(id, key, checksum)``: the store holds ``checksum``'s bytes under ``key``. A row whose checksum
    moved on meanwhile keeps its status (the newer bytes are still wanted)."""
    if not done:
        return
    if _fast(conn):
        (bind,) = _bind_processors(conn, ("last_sync_at",))
        at = now if bind is None else bind(now)
        driver.executemany(conn, _MARK_SYNCED, [(k, s, s, at, i) for i, k, s in done])
        return
    conn.execute(PHOTOS.update().where(PHOTOS.c.id == sa.bindparam("b_id"))
                 .values(stored_key=sa.bindparam("b_key"), stored_checksum=sa.bindparam("b_sum"),
                         sync_status=sa.case((PHOTOS.c.checksum == sa.bindparam("b_sum"),
                                              PhotoSyncStatus.SYNCED.value), else_=PHOTOS.c.sync_status),
                         sync_error=None, attempts=0, next_attempt_at=None, last_sync_at=now),
                 [{"b_id": i, "b_key": k, "b_sum": s} for i, k, s in done])


_MARK_SYNCED = (f"UPDATE {PHOTOS.name} SET stored_key = ?, stored_checksum = ?, "
                f"sync_status = CASE WHEN checksum = ? THEN '{PhotoSyncStatus.SYNCED.value}' ELSE sync_status END, "
                "sync_error = NULL, attempts = 0, next_attempt_at = NULL, last_sync_at = ? WHERE id = ?")


def mark_failed(conn: Connection, failed: Sequence[tuple[str, str, datetime]]) -> None:
    """``(id, reason, next_attempt_at)``."""
    if not failed:
        return
    conn.execute(PHOTOS.update().where(PHOTOS.c.id == sa.bindparam("b_id"))
                 .values(sync_status=PhotoSyncStatus.FAILED.value, sync_error=sa.bindparam("b_err"),
                         attempts=PHOTOS.c.attempts + 1, next_attempt_at=sa.bindparam("b_next")),
                 [{"b_id": i, "b_err": e[:500], "b_next": n} for i, e, n in failed])


def stored_owners(conn: Connection) -> dict[str, list[str]]:
    """key -> the photos whose bytes the store holds there (per the metadata)."""
    owners: dict[str, list[str]] = {}
    for photo_id, key in conn.execute(sa.select(PHOTOS.c.id, PHOTOS.c.stored_key)
                                      .where(PHOTOS.c.stored_key.is_not(None))):
        owners.setdefault(key, []).append(photo_id)
    return owners


def requeue(conn: Connection, ids: Sequence[str], why: str) -> int:
    """These photos' bytes are gone or wrong: pending again, due at once, nothing stored."""
    done = 0
    for chunk in _chunks(list(ids)):
        done += conn.execute(PHOTOS.update().where(PHOTOS.c.id.in_(chunk)).values(
            sync_status=PhotoSyncStatus.PENDING.value, sync_error=why, stored_key=None, stored_checksum=None,
            attempts=0, next_attempt_at=None)).rowcount
    return done


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


def failures(conn: Connection, limit: int = 50) -> list[dict[str, str]]:
    """The first ``limit`` failed photos: ``photo_id`` and ``reason`` (the row's sync_error)."""
    rows = conn.execute(sa.select(PHOTOS.c.id, PHOTOS.c.sync_error).where(
        PHOTOS.c.sync_status == PhotoSyncStatus.FAILED.value).order_by(PHOTOS.c.id).limit(limit))
    return [{"photo_id": i, "reason": error or ""} for i, error in rows]


def counts(conn: Connection) -> dict[str, int]:
    """Photos by sync status, pending rows waiting for a product apart (as a pass's ``states``), and how
    many HO deleted."""
    out = {s.value: 0 for s in PhotoSyncStatus}
    for status, n in conn.execute(sa.select(PHOTOS.c.sync_status, sa.func.count()).group_by(PHOTOS.c.sync_status)):
        out[status] = int(n)
    out["waiting_product"] = int(conn.execute(sa.select(sa.func.count()).where(
        PHOTOS.c.sync_status == PhotoSyncStatus.PENDING.value, PHOTOS.c.sync_error == WAITING)).scalar_one())
    out[PhotoSyncStatus.PENDING.value] -= out["waiting_product"]
    out["deleted_at_ho"] = int(conn.execute(sa.select(sa.func.count()).where(PHOTOS.c.ho_deleted_at.is_not(None)))
                               .scalar_one())
    return out


def listed_states(conn: Connection) -> dict[str, int]:
    """Photos by sync status after a pass, pending rows waiting for a product apart. The rows not synced
    (few) are those HO still lists, counted through the status index; ``synced`` is an index-only count
    of every synced row (a full scan per pass would cost tens of ms at 100k photos), so it includes rows
    HO deleted whose delete is held back (``counts`` shows them as ``deleted_at_ho``)."""
    out = {s.value: 0 for s in PhotoSyncStatus}
    out["waiting_product"] = 0
    waiting = sa.and_(PHOTOS.c.sync_status == PhotoSyncStatus.PENDING.value, PHOTOS.c.sync_error == WAITING)
    state = sa.case((waiting, "waiting_product"), else_=PHOTOS.c.sync_status).label("state")
    rows = conn.execute(sa.select(state, sa.func.count()).where(
        PHOTOS.c.sync_status.in_(_WORK), PHOTOS.c.ho_deleted_at.is_(None)).group_by(sa.literal_column("state")))
    for name, n in rows:
        out[name] = int(n)
    out[PhotoSyncStatus.SYNCED.value] = int(conn.execute(sa.select(sa.func.count()).where(
        PHOTOS.c.sync_status == PhotoSyncStatus.SYNCED.value)).scalar_one())
    return out
