"""The outlet binding's one row (``posync_outlet``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from posync.models.outlet import OutletRecord
from posync.repositories.errors import storage_errors

__all__ = ["OutletConfigRow", "OutletHealth", "OutletIdentity", "OutletRepository"]

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
    bound_at: datetime | None  # when posync started on this database (its first start)
    last_error_kind: str | None  # the last failure's kind: "auth", "unavailable" or "error"


class OutletConfigRow(NamedTuple):
    """Seed 003's OutletConfig as stored: ``credentials`` is the encrypted token (never decrypted here)."""

    outlet_id: str
    company_id: str
    store_id: str
    ho_url: str
    outlet_code: str | None
    brand_id: str | None
    sync_enabled: bool
    last_sync_at: datetime | None
    bound_at: datetime
    credentials: bytes | None

    def __repr__(self) -> str:  # the token is encrypted, but a repr has no business showing it
        shown = {**self._asdict(), "credentials": "********" if self.credentials is not None else None}
        return f"OutletConfigRow({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


# what `posync config set` may change (credentials go through set_credentials)
CONFIG_COLUMNS = frozenset({"outlet_id", "company_id", "store_id", "ho_url", "outlet_code", "brand_id",
                            "sync_enabled"})


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
                                     T.c.last_sync_at, T.c.bound_at, T.c.last_error_kind)
                           .where(T.c.id == 1)).first()
        return None if row is None else OutletHealth(*row)

    def record_cycle(self, conn: Connection, *, online: bool, last_error: str | None, auth_error: str | None,
                     at: datetime, last_error_kind: str | None = None) -> None:
        values = {"online": online, "last_error": last_error, "auth_error": auth_error, "last_cycle_at": at,
                  "last_error_kind": last_error_kind}
        if online:
            values["last_sync_at"] = at
        conn.execute(T.update().where(T.c.id == 1).values(**values))

    def config(self, conn: Connection) -> OutletConfigRow | None:
        row = conn.execute(sa.select(*(T.c[f] for f in OutletConfigRow._fields)).where(T.c.id == 1)).first()
        return None if row is None else OutletConfigRow._make([*row[:-1], None if row[-1] is None else bytes(row[-1])])

    def create_config(self, conn: Connection, values: Mapping[str, Any], now: datetime) -> None:
        """The row, bound to the outlet ``values`` name (a database configured before its first start)."""
        conn.execute(T.insert().values(**{"id": 1, "sync_enabled": True, "online": True, "bound_at": now,
                                          **_columns(values)}))

    def update_config(self, conn: Connection, values: Mapping[str, Any]) -> None:
        if values:
            conn.execute(T.update().where(T.c.id == 1).values(**_columns(values)))

    def set_credentials(self, conn: Connection, token: bytes | None) -> None:
        conn.execute(T.update().where(T.c.id == 1).values(credentials=token))

    def sync_enabled(self, conn: Connection) -> bool | None:
        """The sync switch; ``None`` while the database is bound to no outlet."""
        value = conn.execute(sa.select(T.c.sync_enabled).where(T.c.id == 1)).scalar()
        return None if value is None else bool(value)


def _columns(values: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(values) - CONFIG_COLUMNS
    if unknown:
        raise ValueError(f"posync_outlet has no configurable column {sorted(unknown)}")
    return dict(values)
