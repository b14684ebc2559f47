"""Plain SQL on the DBAPI cursor, for the statements that run once per change.

Claiming and settling a push batch, and applying a pulled page, touch a thousand rows at a time. Through
SQLAlchemy, an ``IN`` list is compiled anew on every execution and every result row is processed in
Python; together that was over half of a claim's time (bench/README.md). These helpers run in the
caller's transaction, on the connection SQLAlchemy already holds. SQL is written with ``?``
placeholders; drivers with the ``format`` paramstyle (psycopg) get ``%s``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Connection

__all__ = ["CHUNK", "column_types", "cursor", "execute", "execute_in", "executemany", "fetch", "fetch_in"]

# values per IN list: far below every driver's parameter limit, big enough to amortise a round trip
CHUNK = 500


def _sql(conn: Connection, sql: str) -> str:
    return sql if conn.dialect.paramstyle == "qmark" else sql.replace("?", "%s")


@contextmanager
def cursor(conn: Connection) -> Iterator[Any]:
    """A DBAPI cursor on the connection (and so in the transaction) that ``conn`` holds."""
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cur
    finally:
        cur.close()


def execute(conn: Connection, sql: str, params: Sequence[Any] = ()) -> int:
    """Run one statement; returns the row count."""
    with cursor(conn) as cur:
        cur.execute(_sql(conn, sql), tuple(params))
        return int(cur.rowcount or 0)


def executemany(conn: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    if not rows:
        return
    with cursor(conn) as cur:
        cur.executemany(_sql(conn, sql), rows)


def fetch(conn: Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with cursor(conn) as cur:
        cur.execute(_sql(conn, sql), tuple(params))
        return list(cur.fetchall())


def column_types(conn: Connection, sql: str) -> list[Any]:
    """The driver's type code of each column ``sql`` returns (some result conversions depend on it)."""
    with cursor(conn) as cur:
        cur.execute(_sql(conn, sql))
        cur.fetchall()
        return [column[1] for column in cur.description]


def _in_lists(conn: Connection, sql: str, values: Sequence[Any],
              before: Sequence[Any], after: Sequence[Any]) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """``sql`` holds one ``IN ({})``; yield it with placeholders for each chunk of ``values``."""
    for i in range(0, len(values), CHUNK):
        chunk = values[i : i + CHUNK]
        yield _sql(conn, sql.format(", ".join(["?"] * len(chunk)))), (*before, *chunk, *after)


def fetch_in(conn: Connection, sql: str, values: Sequence[Any], *, before: Sequence[Any] = (),
             after: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (with one ``IN ({})``) for every value, a chunk at a time. ``before``/``after``
    are the parameters on either side of the IN list."""
    out: list[tuple[Any, ...]] = []
    with cursor(conn) as cur:
        for statement, params in _in_lists(conn, sql, values, before, after):
            cur.execute(statement, params)
            out += cur.fetchall()
    return out


def execute_in(conn: Connection, sql: str, values: Sequence[Any], *, before: Sequence[Any] = (),
               after: Sequence[Any] = ()) -> int:
    """Run ``sql`` (with one ``IN ({})``) over every value, a chunk at a time; returns the row count."""
    count = 0
    with cursor(conn) as cur:
        for statement, params in _in_lists(conn, sql, values, before, after):
            cur.execute(statement, params)
            count += int(cur.rowcount or 0)
    return count
