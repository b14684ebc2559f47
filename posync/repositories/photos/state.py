"""Where photo replication stands: HO's deletes waiting, the checkpoint per source, counts for status."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from posync.models.photo import WAITING, PhotoSyncStatus
from posync.repositories.photos.base import CHECKPOINTS, PHOTOS
from posync.repositories.photos.work import WORK_STATES

__all__ = ["Checkpoint", "counts", "failures", "listed_states", "load_checkpoint", "save_checkpoint", "tombstoned"]


def tombstoned(conn: Connection) -> list[str]:
    """The photos HO deleted, not yet removed here."""
    return list(conn.execute(sa.select(PHOTOS.c.id).where(PHOTOS.c.ho_deleted_at.is_not(None))
                             .order_by(PHOTOS.c.id)).scalars())


class Checkpoint(NamedTuple):
    """A source's ``posync_photo_checkpoint`` row."""

    source: str
    updated_since: datetime | None
    last_incremental_at: datetime | None
    last_full_at: datetime | None
    last_summary: str | None


def load_checkpoint(conn: Connection, source: str) -> Checkpoint | None:
    row = conn.execute(sa.select(*(CHECKPOINTS.c[name] for name in Checkpoint._fields))
                       .where(CHECKPOINTS.c.source == source)).first()
    return None if row is None else Checkpoint._make(row)


def save_checkpoint(conn: Connection, source: str, **values: Any) -> None:
    if conn.execute(CHECKPOINTS.update().where(CHECKPOINTS.c.source == source).values(**values)).rowcount == 0:
        conn.execute(CHECKPOINTS.insert().values(source=source, **values))


def failures(conn: Connection, limit: int = 50) -> list[dict[str, str]]:
    """The first ``limit`` failed photos: ``photo_id`` and ``reason`` (the row's sync_error)."""
    rows = conn.execute(sa.select(PHOTOS.c.id, PHOTOS.c.sync_error).where(
        PHOTOS.c.sync_status == PhotoSyncStatus.FAILED.value).order_by(PHOTOS.c.id).limit(limit))
    return [{"photo_id": row.id, "reason": row.sync_error or ""} for row in rows]


def counts(conn: Connection) -> dict[str, int]:
    """Photos by sync status, pending rows waiting for a product apart (as a pass's ``states``), and how
    many HO deleted."""
    out = {s.value: 0 for s in PhotoSyncStatus}
    per_status = sa.select(PHOTOS.c.sync_status, sa.func.count().label("n")).group_by(PHOTOS.c.sync_status)
    for row in conn.execute(per_status):
        out[row.sync_status] = int(row.n)
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
    rows = conn.execute(sa.select(state, sa.func.count().label("n")).where(
        PHOTOS.c.sync_status.in_(WORK_STATES), PHOTOS.c.ho_deleted_at.is_(None)).group_by(sa.literal_column("state")))
    for row in rows:
        out[row.state] = int(row.n)
    out[PhotoSyncStatus.SYNCED.value] = int(conn.execute(sa.select(sa.func.count()).where(
        PHOTOS.c.sync_status == PhotoSyncStatus.SYNCED.value)).scalar_one())
    return out
