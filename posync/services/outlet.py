"""Which outlet a database belongs to (issue 18, item 9): bound on the first start, checked on every later
one, changed only by an explicit re-bind."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from posync.db import write_transaction
from posync.errors import OutletMismatchError, StorageError
from posync.migrations import locked
from posync.repositories.outlet import OutletIdentity, OutletRepository

__all__ = ["OutletIdentity", "SyncSwitch", "check_or_bind", "rebind", "record_cycle"]

log = logging.getLogger("posync.outlet")
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


def record_cycle(engine: Engine, *, online: bool, last_error: str | None, auth_error: str | None,
                 last_error_kind: str | None = None) -> None:
    """The syncer's cycle outcome, for every worker's status: one short write after each cycle."""
    with write_transaction(engine) as conn:
        _repo.record_cycle(conn, online=online, last_error=last_error, auth_error=auth_error, at=datetime.now(UTC),
                           last_error_kind=last_error_kind)


class SyncSwitch:
    """Whether the scheduler's sync jobs may run: ``posync_outlet.sync_enabled`` (seed 003's switch; capture
    never stops), read at most every ``every`` seconds, so an operator's ``posync config set
    sync_enabled=false`` stops a running outlet's syncing within that. ``fixed`` (``sync_enabled`` given by
    code, the environment or a settings file) wins over the table. A failed read keeps the last answer."""

    def __init__(self, engine: Engine, *, fixed: bool | None = None, every: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._fixed = fixed
        self._every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._enabled = True
        self._read_at: float | None = None

    def __call__(self) -> bool:
        if self._fixed is not None:
            return self._fixed
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self._every:
                self._read_at = now
                try:
                    with self._engine.connect() as conn:
                        stored = _repo.sync_enabled(conn)
                except (StorageError, SQLAlchemyError) as exc:  # connecting is outside the repository
                    log.warning("cannot read the sync switch (%s); keeping sync %s", type(exc).__name__,
                                "on" if self._enabled else "off")
                    return self._enabled
                enabled = stored is not False  # a database bound to no outlet yet: on
                if enabled != self._enabled:
                    log.warning("sync switched %s in posync_outlet (sync_enabled=%s): the sync jobs %s; capture "
                                "goes on", "on" if enabled else "off", str(enabled).lower(),
                                "run again" if enabled else "wait")
                self._enabled = enabled
            return self._enabled
