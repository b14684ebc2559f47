"""The byte pass's statements: which photos need bytes, their results, and what the store holds per the rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from posync.models.photo import REFUSALS, PhotoSyncStatus, WorkItem
from posync.repositories import driver
from posync.repositories.photos.base import PHOTOS, bind_processors, chunks, on_driver

__all__ = ["WORK_STATES", "StoredPhoto", "key_users", "mark_failed", "mark_synced", "requeue", "set_status",
           "sources_by_checksum", "stored_owners", "stored_photos", "work"]

WORK_STATES = (PhotoSyncStatus.PENDING.value, PhotoSyncStatus.SYNCING.value, PhotoSyncStatus.FAILED.value)
_REFUSED = sa.and_(PHOTOS.c.sync_status == PhotoSyncStatus.FAILED.value,  # decide.is_refusal, in SQL
                   sa.or_(*(sa.func.coalesce(PHOTOS.c.sync_error, "").startswith(p, autoescape=True)
                            for p in REFUSALS)))


def work(conn: Connection, now: datetime, *, include_backoff: bool = False) -> list[WorkItem]:
    """Photos that need bytes: pending, left syncing by a crash, or failed and due again (not one the
    listing refused: no download fixes HO's row)."""
    query = sa.select(*(PHOTOS.c[name] for name in WorkItem._fields)).where(
        PHOTOS.c.sync_status.in_(WORK_STATES), PHOTOS.c.ho_deleted_at.is_(None), sa.not_(_REFUSED))
    if not include_backoff:
        query = query.where(sa.or_(PHOTOS.c.sync_status != PhotoSyncStatus.FAILED.value,
                                   PHOTOS.c.next_attempt_at.is_(None), PHOTOS.c.next_attempt_at <= now))
    return [WorkItem._make(row) for row in conn.execute(query.order_by(PHOTOS.c.id))]


def set_status(conn: Connection, ids: Sequence[str], status: str, error: str | None = None) -> None:
    driver.execute_in(conn, f"UPDATE {PHOTOS.name} SET sync_status = ?, sync_error = ? WHERE id IN ({{}})",
                      list(ids), before=(status, error))


def mark_synced(conn: Connection, done: Sequence[tuple[str, str, str]], now: datetime) -> None:
    """``(id, key, checksum)``: the store holds ``checksum``'s bytes under ``key``. A row whose checksum
    moved on meanwhile keeps its status (the newer bytes are still wanted)."""
    if not done:
        return
    if on_driver(conn):
        (bind,) = bind_processors(conn, ("last_sync_at",))
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


def requeue(conn: Connection, ids: Sequence[str], why: str) -> int:
    """These photos' bytes are gone or wrong: pending again, due at once, nothing stored."""
    done = 0
    for chunk in chunks(list(ids)):
        done += conn.execute(PHOTOS.update().where(PHOTOS.c.id.in_(chunk)).values(
            sync_status=PhotoSyncStatus.PENDING.value, sync_error=why, stored_key=None, stored_checksum=None,
            attempts=0, next_attempt_at=None)).rowcount
    return done


class StoredPhoto(NamedTuple):
    """A photo whose bytes the store holds, per its row: ``checksum`` under ``key``."""

    id: str
    key: str
    checksum: str


def stored_photos(conn: Connection, product_id: str | None = None) -> list[StoredPhoto]:
    """Every photo the store holds bytes for (per the rows), or one product's."""
    query = sa.select(PHOTOS.c.id, PHOTOS.c.stored_key, PHOTOS.c.stored_checksum).where(
        PHOTOS.c.stored_key.is_not(None), PHOTOS.c.stored_checksum.is_not(None))
    if product_id is not None:
        query = query.where(PHOTOS.c.product_id == product_id)
    return [StoredPhoto._make(row) for row in conn.execute(query)]


def stored_owners(conn: Connection) -> dict[str, list[str]]:
    """key -> the photos whose bytes the store holds there (per the metadata)."""
    owners: dict[str, list[str]] = {}
    for row in conn.execute(sa.select(PHOTOS.c.id, PHOTOS.c.stored_key).where(PHOTOS.c.stored_key.is_not(None))):
        owners.setdefault(row.stored_key, []).append(row.id)
    return owners


def sources_by_checksum(conn: Connection, checksums: Sequence[str]) -> dict[str, str]:
    """checksum -> a key where the store already holds those bytes (per the metadata)."""
    out: dict[str, str] = {}
    for chunk in chunks(list(checksums)):
        rows = conn.execute(sa.select(PHOTOS.c.stored_checksum, PHOTOS.c.stored_key)
                            .where(PHOTOS.c.stored_checksum.in_(chunk), PHOTOS.c.stored_key.is_not(None)))
        for row in rows:
            out.setdefault(row.stored_checksum, row.stored_key)
    return out


def key_users(conn: Connection, key: str) -> set[str]:
    """Rows whose bytes are (or will be) under ``key``."""
    rows = conn.execute(sa.select(PHOTOS.c.id).where(sa.or_(PHOTOS.c.stored_key == key,
                                                             PHOTOS.c.object_key == key)))
    return set(rows.scalars())
