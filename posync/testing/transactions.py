"""The reference HO's write transactions: serialised on the change counter, retried when the database
is busy.

**Why writers serialise on the counter row.** A pull page is "changes with change_seq > cursor". If two
transactions took sequence numbers independently (a database sequence, max()+1), the one with the
higher number could commit first; a reader paging in between would advance its cursor past the lower
number, which then commits and is never read. Every writing transaction here therefore locks the
``change_seq`` counter row first (``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite,
whose single writer lock does the same), assigns numbers from it and writes it back before committing,
so numbers are handed out in commit order. The same lock makes the version checks and the idempotency
lookup race-free; the unique constraint on ``ho_idempotency`` is the backstop that makes a duplicate
insert fail rather than apply twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from posync.testing.driver_sql import COUNTER_LOCK, COUNTER_SET, RESOURCES_TOUCH, pick
from posync.testing.schema import SEQ, counter, iso, metadata

__all__ = ["SerialWrites", "StoreBusyError", "Writer"]

T = TypeVar("T")


class StoreBusyError(Exception):
    """The database stayed locked or kept failing; the HTTP layer answers 503."""


class Writer:
    """Hands out change sequence numbers inside one locked write transaction."""

    def __init__(self, conn: Connection, start: int, now: str) -> None:
        self.conn = conn
        self.start = self.value = start
        self.now = now
        self.touched: dict[str, int] = {}

    def next_seq(self, resource: str) -> int:
        self.value += 1
        self.touched[resource] = self.value
        return self.value


class SerialWrites:
    """Runs write transactions one at a time, in change_seq order. Takes an engine it does not own."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.clock = clock
        self._sqlite = engine.dialect.name == "sqlite"
        # SQLite has one writer anyway; queueing writers on a lock beats spinning in its busy handler.
        self._lock = threading.Lock() if self._sqlite else None

    def create_schema(self) -> None:
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            if conn.execute(sa.select(counter.c.value).where(counter.c.name == SEQ)).first() is None:
                try:
                    with conn.begin_nested():
                        conn.execute(counter.insert().values(name=SEQ, value=0))
                except sa.exc.IntegrityError:  # another process created it first
                    pass

    def write(self, fn: Callable[[Writer], T], *, attempts: int = 5) -> T:
        """Run ``fn`` in one serialised write transaction, retrying lock timeouts and races."""
        for attempt in range(attempts):
            try:
                with self._transaction() as w:
                    return fn(w)
            except (sa.exc.OperationalError, sa.exc.IntegrityError) as exc:
                if attempt == attempts - 1:
                    raise StoreBusyError(f"HO database write failed: {type(exc.orig).__name__}") from exc
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    @contextmanager
    def _transaction(self) -> Iterator[Writer]:
        if self._lock is not None:
            self._lock.acquire()
        try:
            with self.engine.connect() as conn:
                if self._sqlite:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    # psycopg prepares a statement run 5 times on a connection, and PostgreSQL may then reuse
                    # a generic plan costed while the tables were empty: "= ANY($2)" as a filter over every
                    # row, 1,000 comparisons each. Plan with the values instead (this transaction only).
                    conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
                try:
                    start = conn.exec_driver_sql(pick(conn, COUNTER_LOCK), (SEQ,)).scalar_one()
                    w = Writer(conn, int(start), iso(self.clock()))
                    yield w
                    if w.value != w.start:
                        conn.exec_driver_sql(pick(conn, COUNTER_SET), (w.value, SEQ))
                        conn.exec_driver_sql(pick(conn, RESOURCES_TOUCH), list(w.touched.items()))
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
        finally:
            if self._lock is not None:
                self._lock.release()
