"""The syncer lease (``posync_lease``): taken, renewed, given up and asked for a cycle, each one short
statement in the caller's transaction."""

from __future__ import annotations

from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from posync.models.lease import LeaseRecord
from posync.repositories.errors import storage_errors

__all__ = ["LeaseRepository", "LeaseState"]

T = LeaseRecord.__table__  # type: ignore[attr-defined]


class LeaseState(NamedTuple):
    holder: str | None
    expires_at: float
    token: int
    trigger_at: float | None


@storage_errors
class LeaseRepository:
    def state(self, conn: Connection, name: str) -> LeaseState | None:
        row = conn.execute(sa.select(T.c.holder, T.c.expires_at, T.c.token, T.c.trigger_at)
                           .where(T.c.name == name)).first()
        return None if row is None else LeaseState(*row)

    def take_or_renew(self, conn: Connection, name: str, holder: str, now: float, seconds: float) -> bool:
        """Hold the lease until ``now + seconds`` if ``holder`` holds it or nobody does (it ran out). The
        condition is checked by the UPDATE itself, under the row's write lock: two takers, one wins."""
        taken = conn.execute(
            T.update()
            .where(T.c.name == name, sa.or_(T.c.holder == holder, T.c.holder.is_(None), T.c.expires_at <= now,
                                            T.c.expires_at > now + seconds + 1.0))  # a clock set back
            .values(expires_at=now + seconds,
                    token=sa.case((T.c.holder == holder, T.c.token), else_=T.c.token + 1),
                    holder=holder))
        return bool(taken.rowcount)

    def give_up(self, conn: Connection, name: str, holder: str) -> bool:
        return bool(conn.execute(T.update().where(T.c.name == name, T.c.holder == holder)
                                 .values(holder=None, expires_at=0.0)).rowcount)

    def run_out(self, conn: Connection, name: str, holder: str) -> bool:
        """The lease ends now but still names ``holder``: whoever takes it next gives its changes back."""
        return bool(conn.execute(T.update().where(T.c.name == name, T.c.holder == holder)
                                 .values(expires_at=0.0)).rowcount)

    def ask_for_cycle(self, conn: Connection, name: str, now: float) -> None:
        conn.execute(T.update().where(T.c.name == name).values(trigger_at=now))
