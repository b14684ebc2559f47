"""The outlet binding's one row (``posync_outlet``)."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from posync.models.outlet import OutletRecord
from posync.repositories.errors import storage_errors

__all__ = ["OutletHealth", "OutletIdentity", "OutletRepository"]

T = OutletRecord.__table__  # type: ignore[attr-defined]


class OutletIdentity(NamedTuple):
    """What binds a database to its outlet: pushing under any other would mix two outlets' sales."""

    outlet_id: str
    company_id: str
    store_id: str
    ho_url: str


class OutletHealth(NamedTuple):
    """How the outlet's syncer's last cycle went."""

    online: bool
    last_error: str | None
    auth_error: str | None
    last_cycle_at: datetime | None
    last_sync_at: datetime | None


@storage_errors
class OutletRepository:
    def identity(self, conn: Connection) -> OutletIdentity | None:
        row = conn.execute(sa.select(T.c.outlet_id, T.c.company_id, T.c.store_id, T.c.ho_url)
                           .where(T.c.id == 1)).first()
        return None if row is None else OutletIdentity(*row)

    def bind(self, conn: Connection, identity: OutletIdentity, now: datetime) -> None:
        values = {**identity._asdict(), "bound_at": now}
        if not conn.execute(T.update().where(T.c.id == 1).values(**values)).rowcount:
            conn.execute(T.insert().values(id=1, sync_enabled=True, online=True, **values))

    def health(self, conn: Connection) -> OutletHealth | None:
        row = conn.execute(sa.select(T.c.online, T.c.last_error, T.c.auth_error, T.c.last_cycle_at,
                                     T.c.last_sync_at).where(T.c.id == 1)).first()
        return None if row is None else OutletHealth(*row)

    def record_cycle(self, conn: Connection, *, online: bool, last_error: str | None, auth_error: str | None,
                     at: datetime) -> None:
        values = {"online": online, "last_error": last_error, "auth_error": auth_error, "last_cycle_at": at}
        if online:
            values["last_sync_at"] = at
        conn.execute(T.update().where(T.c.id == 1).values(**values))
