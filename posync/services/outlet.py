"""Which outlet a database belongs to (issue 18, item 9): bound on the first start, checked on every later
one, changed only by an explicit re-bind."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from posync.db import write_transaction
from posync.errors import OutletMismatchError
from posync.migrations import locked
from posync.repositories.outlet import OutletIdentity, OutletRepository

__all__ = ["OutletIdentity", "check_or_bind", "rebind", "record_cycle"]

_repo = OutletRepository()


def check_or_bind(engine: Engine, given: OutletIdentity) -> None:
    """Bind an unbound database to ``given``; refuse one bound to another outlet, company, store or HO."""
    with engine.connect() as conn:
        bound = _repo.identity(conn)
    if bound is None:  # several workers start together: one binds under the lock, the rest check
        with locked(engine) as conn:
            bound = _repo.identity(conn)
            if bound is None:
                _repo.bind(conn, given, datetime.now(UTC))
                return
    if bound != given:
        raise OutletMismatchError(bound, given)


def rebind(engine: Engine, given: OutletIdentity) -> OutletIdentity | None:
    """Bind the database to ``given`` whatever it was bound to; returns what it was bound to before."""
    with locked(engine) as conn:
        before = _repo.identity(conn)
        _repo.bind(conn, given, datetime.now(UTC))
    return before


def record_cycle(engine: Engine, *, online: bool, last_error: str | None, auth_error: str | None) -> None:
    """The syncer's cycle outcome, for every worker's status: one short write after each cycle."""
    with write_transaction(engine) as conn:
        _repo.record_cycle(conn, online=online, last_error=last_error, auth_error=auth_error, at=datetime.now(UTC))
