"""The hot SQL of the reference HO's writes, as plain driver statements, and the record-row loads and
saves built on them.

Every write transaction runs these: plain driver SQL skips SQLAlchemy's statement compilation (~0.5 ms
each). Each statement is a pair (SQLite, PostgreSQL); :func:`pick` chooses. Bulk writes bypass
SQLAlchemy's per-row parameter processing, which cost more than the database work (the HO must apply
>= 10,000 changes/s on SQLite): on SQLite the driver's executemany, on PostgreSQL one statement over
unnest()ed column arrays, since a round trip per row is what costs there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from posync.testing.changes import State, canonical_json, loads_json

__all__ = [
    "APPLY_LOG_INSERT",
    "COUNTER_LOCK",
    "COUNTER_SET",
    "IDEMPOTENCY_INSERT",
    "RESOURCES_TOUCH",
    "USAGE_INSERT",
    "Statement",
    "executemany",
    "load_json",
    "load_states",
    "pick",
    "save_states",
    "select_in",
]

Statement = tuple[str, str]  # (SQLite, PostgreSQL)


def _both(sql: str) -> Statement:
    return sql, sql.replace("?", "%s")


# On SQLite, BEGIN IMMEDIATE already holds the write lock: no FOR UPDATE there.
COUNTER_LOCK = ("SELECT value FROM ho_counter WHERE name = ?",
                "SELECT value FROM ho_counter WHERE name = %s FOR UPDATE")
COUNTER_SET = _both("UPDATE ho_counter SET value = ? WHERE name = ?")
RESOURCES_TOUCH = _both("INSERT INTO ho_resources (resource, last_seq, purged_seq) VALUES (?, ?, 0) "
                        "ON CONFLICT (resource) DO UPDATE SET last_seq = excluded.last_seq")


def pick(conn: Connection, sql: Statement) -> str:
    return sql[0] if conn.dialect.name == "sqlite" else sql[1]


def _bulk_insert(table: str, cols: str, types: str) -> Statement:
    names = [c.strip() for c in cols.split(",")]
    kinds = [t.strip() for t in types.split(",")]
    sqlite = f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' for _ in names)})"
    arrays = ", ".join(f"%s::{'text' if k == 'json' else k}[]" for k in kinds)
    picks = ", ".join(f"c{i}::json" if k == "json" else f"c{i}" for i, k in enumerate(kinds))
    alias = ", ".join(f"c{i}" for i in range(len(kinds)))
    return sqlite, f"INSERT INTO {table} ({cols}) SELECT {picks} FROM unnest({arrays}) AS t({alias})"


_RECORD_INSERT = _bulk_insert("ho_records", "resource, id, version, data, deleted, updated_at, change_seq",
                              "text, text, int, json, bool, text, bigint")
_RECORD_UPDATE = (
    "UPDATE ho_records SET version = ?, data = ?, deleted = ?, updated_at = ?, change_seq = ? "
    "WHERE resource = ? AND id = ?",
    "UPDATE ho_records AS h SET version = t.v, data = t.d::json, deleted = t.x, updated_at = t.u, "
    "change_seq = t.s FROM unnest(%s::int[], %s::text[], %s::bool[], %s::text[], %s::bigint[], %s::text[], "
    "%s::text[]) AS t(v, d, x, u, s, r, i) WHERE h.resource = t.r AND h.id = t.i",
)
IDEMPOTENCY_INSERT = _bulk_insert("ho_idempotency", "outlet_id, idempotency_key, request_hash, result, created_at",
                                  "text, text, text, json, text")
APPLY_LOG_INSERT = _bulk_insert("ho_apply_log",
                                "outlet_id, idempotency_key, resource, entity_id, change_seq, applied_at",
                                "text, text, text, text, bigint, text")
USAGE_INSERT = _bulk_insert("ho_usage", "outlet_id, idempotency_key, data, received_at", "text, text, json, text")


def executemany(conn: Connection, sql: Statement, rows: list[tuple[Any, ...]]) -> None:
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(sql[0], rows)
    else:
        conn.exec_driver_sql(sql[1], tuple(list(col) for col in zip(*rows, strict=True)))


def select_in(conn: Connection, head: str, first: str, values: list[str]) -> Sequence[Any]:
    """``head`` ends in a column; appends a membership test on ``values`` passed as ONE parameter (a JSON
    array through json_each on SQLite, an array with = ANY on PostgreSQL) instead of thousands."""
    if not values:
        return []
    if conn.dialect.name == "sqlite":
        sql, param = head + " IN (SELECT value FROM json_each(?))", canonical_json(values)
    else:
        sql, param = head.replace("?", "%s") + " = ANY(%s::text[])", values  # type: ignore[assignment]
    return conn.exec_driver_sql(sql, (first, param)).fetchall()


def load_json(value: Any) -> Any:
    """JSON columns read through the driver: SQLite gives text, psycopg already-decoded values."""
    return loads_json(value) if isinstance(value, str | bytes) else value


def load_states(conn: Connection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], State]:
    """HO's current rows (tombstones included) for ``(resource, id)`` keys; absent keys are left out."""
    by_resource: dict[str, list[str]] = {}
    for resource, entity_id in keys:
        by_resource.setdefault(resource, []).append(entity_id)
    out: dict[tuple[str, str], State] = {}
    for resource, ids in by_resource.items():
        rows = select_in(conn, "SELECT id, version, deleted, data, updated_at, change_seq FROM ho_records "
                         "WHERE resource = ? AND id", resource, ids)
        for entity_id, version, deleted, data, updated_at, seq in rows:
            out[(resource, entity_id)] = State(version, bool(deleted), load_json(data), updated_at, seq)
    return out


def save_states(conn: Connection, dirty: dict[tuple[str, str], tuple[State, str | None]],
                existing: set[tuple[str, str]]) -> None:
    """Write ``(state, data as JSON)`` per key: an update where the key is in ``existing``, else an insert."""
    inserts, updates = [], []
    for (resource, entity_id), (s, data_json) in dirty.items():
        if (resource, entity_id) in existing:
            updates.append((s.version, data_json, s.deleted, s.updated_at, s.change_seq, resource, entity_id))
        else:
            inserts.append((resource, entity_id, s.version, data_json, s.deleted, s.updated_at, s.change_seq))
    if inserts:
        executemany(conn, _RECORD_INSERT, inserts)
    if updates:
        executemany(conn, _RECORD_UPDATE, updates)
