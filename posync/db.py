"""Small database helpers: posync never creates the host's engine, but offers a well-configured one.

SQLite needs three things for several POS processes sharing one file: WAL (readers don't block the
writer), a busy timeout (wait instead of failing), and ``BEGIN IMMEDIATE`` for read-modify-write
transactions (take the write lock up front, so two claimers never deadlock upgrading a read lock).
A fourth is for speed: WAL checkpoints every 10,000 pages instead of every 1,000.

SQLite has one writer at a time, and a writer that finds the lock taken sleeps in SQLite's busy handler
(1, 2, 5 ... 100 ms between tries). While posync drains a queue, one write transaction after another,
the till's writer could keep waking up to a lock that is taken again and wait for seconds.
:class:`WriteGate` lets the till go first: in this process, a host write statement waits (on a
condition, woken the moment posync commits) only for posync's current transaction, and posync starts
its next one only when no host write is waiting or open. Across processes (``uvicorn --workers 4``) the
same order holds through a lock file beside the database (posync/host_writes.py): every posync write
transaction, in any process, first waits for the host writes open in any process where a gate is attached,
and keeps itself short while the host is writing (bench/README.md).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from posync import _gc
from posync.host_writes import HostWrites, host_writes

__all__ = ["UnitOfWork", "WriteGate", "committed", "create_engine", "is_sqlite", "write_transaction"]

POSYNC = "posync_internal"  # execution option on posync's own connections


def is_sqlite(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "sqlite"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    _switch_to_wal(cur)
    cur.execute("PRAGMA synchronous=NORMAL")
    # A WAL checkpoint runs inside whichever commit crosses the threshold. At SQLite's default (1,000
    # pages, ~4 MB) that is every other push batch, and it made claim + settle ~25% slower than
    # checkpointing every 10,000 pages (~40 MB; bench/README.md). The size limit truncates the WAL
    # file back after a checkpoint, so it does not keep its high-water mark on disk.
    cur.execute("PRAGMA wal_autocheckpoint=10000")
    cur.execute("PRAGMA journal_size_limit=67108864")
    cur.close()


def _switch_to_wal(cur: Any, patience: float = 30.0) -> None:
    """Switching a new database to WAL needs it to itself and fails at once, busy timeout or not, while
    another process writes (another worker's migration at start-up: tests/test_startup_race.py); once
    switched, every later connection finds it so. Retried for ``patience`` seconds."""
    give_up = time.monotonic() + patience
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > give_up:
                raise
            time.sleep(0.02)


def create_engine(url: str, **kwargs: Any) -> Engine:
    """An engine tuned for posync: WAL + busy timeout on SQLite, pre-ping on servers."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **kwargs)


HOST_PATIENCE = 2.0  # seconds a posync write transaction waits for the host's open writes, at most


@contextmanager
def write_transaction(engine: Engine, *, defer_to_host: bool = True) -> Iterator[Connection]:
    """A transaction that commits on success and rolls back on any exception.

    On SQLite it starts with BEGIN IMMEDIATE so the write lock is held from the first read, after the
    host's writes open in any process have ended (bounded; posync/host_writes.py) unless the caller has
    waited for them already (``defer_to_host=False``).
    """
    if defer_to_host:
        defer(engine)
    with engine.connect() as conn:
        conn.execution_options(**{POSYNC: True})
        if is_sqlite(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        with committed(conn):
            yield conn


def defer(engine: Engine | Connection) -> None:
    """Wait (bounded) until no host write is open in any process on ``engine``'s SQLite database."""
    writes = host_writes(engine)
    if writes is not None:
        writes.wait_for_host(HOST_PATIENCE)


@contextmanager
def committed(conn: Connection) -> Iterator[Connection]:
    """Commit ``conn``'s transaction when the block ends normally; roll it back on any exception (an
    interrupt too: nothing half done is ever committed)."""
    try:
        yield conn
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


class UnitOfWork:
    """posync's write transactions on one engine, and the clock of the services that use it.

    ``with uow.begin() as conn:`` waits for the host's writes in this process (:class:`WriteGate`), holds
    the cyclic GC off if asked (posync/_gc.py), and commits when the block ends normally; an exception
    rolls it back."""

    def __init__(self, engine: Engine, *, gate: WriteGate | None = None, pause_gc: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.gate = gate or WriteGate()
        self.pause_gc = pause_gc
        self.clock = clock

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        defer(self.engine)  # other processes' host writes first, then this process's (the gate)
        with (self.gate.posync(), _gc.paused(self.pause_gc),
              write_transaction(self.engine, defer_to_host=False) as conn):
            yield conn


class WriteGate:
    """Orders posync's write transactions after the host's writes on one SQLite engine, in-process.

    ``with gate.posync():`` around each posync write transaction waits while a host write statement is
    waiting or a host transaction that wrote is still open, then holds the gate; a host write statement
    that is the first of its transaction waits only while posync holds it. Both waits are bounded
    (``patience``): past it, SQLite's own locking decides as it would without the gate. A gate that was
    never attached (PostgreSQL, ``yield_to_host=False``) costs nothing."""

    def __init__(self, patience: float = 2.0) -> None:
        self._cond = threading.Condition()
        self._patience = patience
        self._posync = 0
        self._waiting = 0
        self._open: dict[int, Any] = {}  # host DBAPI connections with an open transaction that wrote
        # host write statements past the gate, not yet returned: the driver begins their transaction only
        # when the statement runs, so "not in a transaction" does not mean done for these
        self._running: set[int] = set()
        self._last_host_write = float("-inf")
        self._across: HostWrites | None = None  # the same, seen by posync in the other processes
        self.attached = False

    def attach(self, engine: Engine) -> None:
        if not is_sqlite(engine) or self.attached:
            return
        self._across = host_writes(engine)
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "after_cursor_execute", self._after)
        sa.event.listen(engine, "commit", self._ended)
        sa.event.listen(engine, "rollback", self._ended)
        sa.event.listen(engine, "handle_error", self._failed)
        self.attached = True

    @contextmanager
    def posync(self) -> Iterator[None]:
        if not self.attached:
            yield
            return
        deadline = time.monotonic() + self._patience
        with self._cond:
            while (self._waiting or self._busy_host()) and time.monotonic() < deadline:
                self._cond.wait(max(0.0, min(0.05, deadline - time.monotonic())))
            self._posync += 1
        try:
            yield
        finally:
            with self._cond:
                self._posync -= 1
                self._cond.notify_all()

    def host_busy(self, within: float = 2.0) -> bool:
        """Has the host written in this process within the last ``within`` seconds? posync then keeps its
        own write transactions small."""
        if not self.attached:
            return False
        if time.monotonic() - self._last_host_write < within:
            return True
        return self._across is not None and self._across.recently(within)

    def _busy_host(self) -> bool:
        for key, dbapi in list(self._open.items()):
            if key not in self._running and not getattr(dbapi, "in_transaction", False):
                del self._open[key]  # committed or rolled back where no event said so
                if self._across is not None:
                    self._across.host_ended()
        return bool(self._open)

    @staticmethod
    def _host_write(conn: Connection, context: Any, statement: str) -> bool:
        if conn.get_execution_options().get(POSYNC):
            return False
        if context is not None and (context.isinsert or context.isupdate or context.isdelete):
            return True
        head = statement.lstrip()[:7].upper()
        return head.startswith(("INSERT", "UPDATE", "DELETE", "REPLACE", "UPSERT"))

    def _before(self, conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        if not self._host_write(conn, context, statement):
            return
        self._last_host_write = time.monotonic()
        dbapi = conn.connection.dbapi_connection
        if id(dbapi) in self._open:
            return  # its transaction holds SQLite's write lock already: never wait on posync then
        deadline = time.monotonic() + self._patience
        with self._cond:
            self._waiting += 1
            try:
                while self._posync and time.monotonic() < deadline:
                    self._cond.wait(max(0.0, min(0.05, deadline - time.monotonic())))
            finally:
                self._waiting -= 1
            self._open[id(dbapi)] = dbapi
            self._running.add(id(dbapi))
            self._cond.notify_all()
        if self._across is not None:
            self._across.host_began()

    def _after(self, conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        dbapi = conn.connection.dbapi_connection
        self._running.discard(id(dbapi))
        if id(dbapi) in self._open and not getattr(dbapi, "in_transaction", True):
            self._release(dbapi)  # autocommit: the statement's own transaction is over

    def _ended(self, conn: Connection) -> None:
        dbapi = conn.connection.dbapi_connection if not conn.closed else None
        if dbapi is not None and id(dbapi) in self._open:
            self._release(dbapi)

    def _failed(self, context: Any) -> None:
        conn = context.connection
        if conn is not None and not conn.closed:
            dbapi = conn.connection.dbapi_connection
            self._running.discard(id(dbapi))
            if id(dbapi) in self._open and not getattr(dbapi, "in_transaction", True):
                self._release(dbapi)

    def _release(self, dbapi: Any) -> None:
        with self._cond:
            was_open = self._open.pop(id(dbapi), None) is not None
            self._running.discard(id(dbapi))
            self._cond.notify_all()
        if was_open and self._across is not None:
            self._across.host_ended()
