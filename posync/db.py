"""Small database helpers: posync never creates the host's engine, but offers a well-configured one.

SQLite needs three things for several POS processes sharing one file: WAL (readers don't block the
writer), a busy timeout (wait instead of failing), and ``BEGIN IMMEDIATE`` for read-modify-write
transactions (take the write lock up front, so two claimers never deadlock upgrading a read lock).
A fourth is for speed: WAL checkpoints every 10,000 pages instead of every 1,000.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = ["create_engine", "is_sqlite", "write_transaction"]


def is_sqlite(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "sqlite"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    # A WAL checkpoint runs inside whichever commit crosses the threshold. At SQLite's default (1,000
    # pages, ~4 MB) that is every other push batch, and it made claim + settle ~25% slower than
    # checkpointing every 10,000 pages (~40 MB; bench/README.md). The size limit truncates the WAL
    # file back after a checkpoint, so it does not keep its high-water mark on disk.
    cur.execute("PRAGMA wal_autocheckpoint=10000")
    cur.execute("PRAGMA journal_size_limit=67108864")
    cur.close()


def create_engine(url: str, **kwargs: Any) -> Engine:
    """An engine tuned for posync: WAL + busy timeout on SQLite, pre-ping on servers."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **kwargs)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that commits on success and rolls back on any exception.

    On SQLite it starts with BEGIN IMMEDIATE so the write lock is held from the first read.
    """
    with engine.connect() as conn:
        if is_sqlite(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
