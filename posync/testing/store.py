"""The reference HO's storage: SQLAlchemy Core tables prefixed ``ho_``, on SQLite or PostgreSQL.

Tables::

    ho_records      (resource, id) -> version, data, deleted, updated_at, change_seq   (tombstones included)
    ho_counter      one row per counter; "change_seq" is the global change sequence
    ho_resources    per resource: last_seq (for /version/) and purged_seq (the tombstone horizon)
    ho_idempotency  UNIQUE (outlet_id, idempotency_key) -> request_hash, result     (applied changes only)
    ho_apply_log    append-only audit: one row each time a key was applied (for exactly-once assertions)
    ho_usage        append-only usage records (POST /sync/usage/)

**Why writers serialise on the counter row.** A pull page is "changes with change_seq > cursor". If two
transactions took sequence numbers independently (a database sequence, max()+1), the one with the
higher number could commit first; a reader paging in between would advance its cursor past the lower
number, which then commits and is never read. Every writing transaction here therefore locks the
``change_seq`` counter row first (``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite,
whose single writer lock does the same), assigns numbers from it and writes it back before committing,
so numbers are handed out in commit order. The same lock makes the version checks and the idempotency
lookup race-free; the unique constraint on ``ho_idempotency`` is the backstop that makes a duplicate
insert fail rather than apply twice.

Each push is one transaction and set-based: one SELECT of the batch's records (``IN``), one SELECT of
its idempotency keys, then ``executemany`` inserts and updates.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from posync.testing.changes import (
    Change,
    Rejection,
    State,
    Validator,
    canonical_json,
    decide,
    loads_json,
    validate,
)

__all__ = ["HORecord", "HOStore", "StoreBusyError", "Writer", "metadata"]

T = TypeVar("T")

metadata = sa.MetaData()
_S = sa.String

records = sa.Table(
    "ho_records",
    metadata,
    sa.Column("resource", _S(64), primary_key=True),
    sa.Column("id", _S(255), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("data", sa.JSON, nullable=True),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("updated_at", _S(40), nullable=False),
    sa.Column("change_seq", sa.BigInteger, nullable=False),
    sa.Index("ix_ho_records_seq", "resource", "change_seq"),
    # the seed profile's (and the legacy) updated_since + offset paging, as an HO's ORM would index it
    sa.Index("ix_ho_records_live", "resource", "deleted", "updated_at", "id"),
)
counter = sa.Table(
    "ho_counter",
    metadata,
    sa.Column("name", _S(32), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)
resources = sa.Table(
    "ho_resources",
    metadata,
    sa.Column("resource", _S(64), primary_key=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("purged_seq", sa.BigInteger, nullable=False),
)
idempotency = sa.Table(
    "ho_idempotency",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("outlet_id", _S(255), nullable=False),
    sa.Column("idempotency_key", _S(255), nullable=False),
    sa.Column("request_hash", _S(64), nullable=False),
    sa.Column("result", sa.JSON, nullable=False),
    sa.Column("created_at", _S(40), nullable=False),
    sa.UniqueConstraint("outlet_id", "idempotency_key", name="uq_ho_idempotency_outlet_key"),
)
apply_log = sa.Table(
    "ho_apply_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("outlet_id", _S(255), nullable=False),
    sa.Column("idempotency_key", _S(255), nullable=False),
    sa.Column("resource", _S(64), nullable=False),
    sa.Column("entity_id", _S(255), nullable=False),
    sa.Column("change_seq", sa.BigInteger, nullable=True),
    sa.Column("applied_at", _S(40), nullable=False),
    # Unindexed on purpose: written on every push, read only by test assertions.
)
usage = sa.Table(
    "ho_usage",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("outlet_id", _S(255), nullable=False),
    sa.Column("idempotency_key", _S(255), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("received_at", _S(40), nullable=False),
)

SEQ = "change_seq"
_REC_COLS = (records.c.id, records.c.version, records.c.deleted, records.c.data, records.c.updated_at,
             records.c.change_seq)


class StoreBusyError(Exception):
    """The database stayed locked or kept failing; the HTTP layer answers 503."""


@dataclass(frozen=True, slots=True)
class HORecord:
    resource: str
    id: str
    version: int
    data: dict[str, Any] | None
    deleted: bool
    updated_at: str
    change_seq: int

    def as_pull(self) -> dict[str, Any]:
        """The record as a pull page / webhook carries it: data fields plus id, version, updated_at."""
        return {**(self.data or {}), "id": self.id, "version": self.version, "updated_at": self.updated_at}

    def as_current(self) -> dict[str, Any]:
        """The record as a push ``conflict`` result carries it."""
        return {"id": self.id, "version": self.version, "deleted": self.deleted,
                "updated_at": self.updated_at, "data": self.data}

    def as_tombstone(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "deleted_at": self.updated_at}


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="microseconds")


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


class HOStore:
    """Persistence of the reference HO. Takes an engine it does not own (the caller disposes it)."""

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

    # -- transactions ---------------------------------------------------------------------------

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
                    start = conn.exec_driver_sql(_pick(conn, _COUNTER_LOCK), (SEQ,)).scalar_one()
                    w = Writer(conn, int(start), iso(self.clock()))
                    yield w
                    if w.value != w.start:
                        conn.exec_driver_sql(_pick(conn, _COUNTER_SET), (w.value, SEQ))
                        self._touch_resources(conn, w.touched)
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
        finally:
            if self._lock is not None:
                self._lock.release()

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

    @staticmethod
    def _touch_resources(conn: Connection, touched: dict[str, int]) -> None:
        conn.exec_driver_sql(_pick(conn, _RESOURCES_TOUCH), list(touched.items()))

    # -- loading --------------------------------------------------------------------------------

    @staticmethod
    def _states(conn: Connection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], State]:
        by_resource: dict[str, list[str]] = {}
        for resource, entity_id in keys:
            by_resource.setdefault(resource, []).append(entity_id)
        out: dict[tuple[str, str], State] = {}
        for resource, ids in by_resource.items():
            rows = _select_in(conn, "SELECT id, version, deleted, data, updated_at, change_seq FROM ho_records "
                              "WHERE resource = ? AND id", resource, ids)
            for entity_id, version, deleted, data, updated_at, seq in rows:
                out[(resource, entity_id)] = State(version, bool(deleted), _load(data), updated_at, seq)
        return out

    @staticmethod
    def _stored_keys(conn: Connection, outlet_id: str, keys: list[str]) -> dict[str, tuple[str, Any]]:
        rows = _select_in(conn, "SELECT idempotency_key, request_hash, result FROM ho_idempotency "
                          "WHERE outlet_id = ? AND idempotency_key", outlet_id, keys)
        return {key: (digest, _load(result)) for key, digest, result in rows}

    # -- push -----------------------------------------------------------------------------------

    def apply_changes(
        self, outlet_id: str, items: Sequence[Change | Rejection], validators: dict[str, Validator],
        *, want_changed: bool = True,
    ) -> tuple[list[dict[str, Any]], list[HORecord]]:
        """Apply a push batch in one transaction; answers (results in request order, changed records
        in change_seq order, or [] unless ``want_changed``)."""
        return self.write(lambda w: self._apply_changes(w, outlet_id, items, validators, want_changed))

    def _apply_changes(
        self, w: Writer, outlet_id: str, items: Sequence[Change | Rejection], validators: dict[str, Validator],
        want_changed: bool,
    ) -> tuple[list[dict[str, Any]], list[HORecord]]:
        changes = [c for c in items if isinstance(c, Change)]
        stored = self._stored_keys(w.conn, outlet_id, list({c.idempotency_key for c in changes}))
        # A repeated key is answered from its stored result: only the other changes need HO's records
        # (a resend of an applied batch, the usual retry, reads none).
        states = self._states(w.conn, {(c.resource, c.entity_id) for c in changes
                                       if c.idempotency_key not in stored})
        existing = set(states)
        dirty: dict[tuple[str, str], tuple[State, str | None]] = {}
        results: list[dict[str, Any]] = []
        new_keys: list[tuple[Any, ...]] = []
        log: list[tuple[Any, ...]] = []
        now = w.now
        for item in items:
            if isinstance(item, Rejection):
                results.append(item.result())
                continue
            key = item.idempotency_key
            prior = stored.get(key)
            if prior is not None:
                results.append(_repeat(key, prior, item.request_hash))
                continue
            if validators:
                rejected = validate(item, validators)
                if rejected is not None:
                    results.append(rejected.result(key))
                    continue
            k = (item.resource, item.entity_id)
            current = states.get(k)
            d = decide(item, current)
            if d.status == "conflict":
                results.append({"idempotency_key": key, "status": "conflict",
                                "current": _current(item.entity_id, current)})
                continue
            seq = None
            if d.changed:
                seq = w.next_seq(item.resource)
                states[k] = new = State(d.version, d.deleted, d.data, now, seq)
                dirty[k] = (new, item.data_json if not d.deleted else canonical_json(d.data))
            result = {"idempotency_key": key, "status": "applied", "cloud_version": d.version}
            results.append(result)
            stored[key] = (item.request_hash, result)  # a repeat in this batch: _repeat re-labels a copy
            new_keys.append((outlet_id, key, item.request_hash, _applied_json(d.version), now))
            log.append((outlet_id, key, item.resource, item.entity_id, seq, now))
        self._write_states(w.conn, dirty, existing)
        if new_keys:
            _executemany(w.conn, _IDEMPOTENCY_INSERT, new_keys)
            _executemany(w.conn, _LOG_INSERT, log)
        changed = [HORecord(r, i, s.version, s.data, s.deleted, w.now, s.change_seq)
                   for (r, i), (s, _) in dirty.items()] if want_changed else []
        return results, changed

    @staticmethod
    def _write_states(conn: Connection, dirty: dict[tuple[str, str], tuple[State, str | None]],
                      existing: set[tuple[str, str]]) -> None:
        inserts, updates = [], []
        for (resource, entity_id), (s, data_json) in dirty.items():
            if (resource, entity_id) in existing:
                updates.append((s.version, data_json, s.deleted, s.updated_at, s.change_seq, resource, entity_id))
            else:
                inserts.append((resource, entity_id, s.version, data_json, s.deleted, s.updated_at, s.change_seq))
        if inserts:
            _executemany(conn, _RECORD_INSERT, inserts)
        if updates:
            _executemany(conn, _RECORD_UPDATE, updates)

    def apply_usages(
        self, outlet_id: str, items: Sequence[tuple[str, str, dict[str, Any]] | Rejection],
        validators: dict[str, Validator],
    ) -> list[dict[str, Any]]:
        """Append usage records ``(key, request_hash, usage)``; answers results in request order."""

        def run(w: Writer) -> list[dict[str, Any]]:
            keys = list({it[0] for it in items if not isinstance(it, Rejection)})
            stored = self._stored_keys(w.conn, outlet_id, keys)
            results: list[dict[str, Any]] = []
            rows, new_keys, log = [], [], []
            for it in items:
                if isinstance(it, Rejection):
                    results.append(it.result())
                    continue
                key, digest, body = it
                prior = stored.get(key)
                if prior is not None:
                    results.append(_repeat(key, prior, digest))
                    continue
                rejected = validate(Change(key, "usage", key, "create", None, body, digest), validators)
                if rejected is not None:
                    results.append(rejected.result(key))
                    continue
                results.append({"idempotency_key": key, "status": "applied", "cloud_version": 1})
                stored[key] = (digest, {"status": "applied", "cloud_version": 1})
                rows.append((outlet_id, key, canonical_json(body), w.now))
                new_keys.append((outlet_id, key, digest, _applied_json(1), w.now))
                log.append((outlet_id, key, "usage", key, None, w.now))
            if rows:
                _executemany(w.conn, _USAGE_INSERT, rows)
                _executemany(w.conn, _IDEMPOTENCY_INSERT, new_keys)
                _executemany(w.conn, _LOG_INSERT, log)
            return results

        return self.write(run)

    # -- HO-side edits --------------------------------------------------------------------------

    def put(self, resource: str, entity_id: str, data: dict[str, Any]) -> HORecord:
        def run(w: Writer) -> HORecord:
            cur = self._states(w.conn, {(resource, entity_id)}).get((resource, entity_id))
            version = (cur.version if cur else 0) + 1
            s = State(version, False, data, w.now, w.next_seq(resource))
            self._write_states(w.conn, {(resource, entity_id): (s, canonical_json(data))},
                               {(resource, entity_id)} if cur else set())
            return HORecord(resource, entity_id, version, data, False, w.now, s.change_seq)

        return self.write(run)

    def delete(self, resource: str, entity_id: str) -> HORecord | None:
        """Tombstone a live record; ``None`` when HO has no live record of that id."""

        def run(w: Writer) -> HORecord | None:
            cur = self._states(w.conn, {(resource, entity_id)}).get((resource, entity_id))
            if cur is None or cur.deleted:
                return None
            s = State(cur.version + 1, True, cur.data, w.now, w.next_seq(resource))
            self._write_states(w.conn, {(resource, entity_id): (s, canonical_json(cur.data))},
                               {(resource, entity_id)})
            return HORecord(resource, entity_id, s.version, s.data, True, w.now, s.change_seq)

        return self.write(run)

    def purge_tombstones(self, horizon: float) -> int:
        """Delete tombstones older than ``horizon`` seconds; cursors before them then answer 410."""

        def run(w: Writer) -> int:
            cutoff = iso(self.clock() - timedelta(seconds=horizon))
            cond = sa.and_(records.c.deleted.is_(True), records.c.updated_at <= cutoff)
            tops = w.conn.execute(
                sa.select(records.c.resource, sa.func.max(records.c.change_seq), sa.func.count())
                .where(cond).group_by(records.c.resource)
            ).all()
            if not tops:
                return 0
            w.conn.execute(records.delete().where(cond))
            w.conn.execute(
                resources.update().where(resources.c.resource == sa.bindparam("k"))
                .values(purged_seq=sa.func.max(resources.c.purged_seq, sa.bindparam("p"))
                        if self._sqlite else sa.func.greatest(resources.c.purged_seq, sa.bindparam("p"))),
                [{"k": r, "p": int(top)} for r, top, _ in tops],
            )
            return sum(int(n) for _, _, n in tops)

        return self.write(run)

    # -- reads ----------------------------------------------------------------------------------

    def _rows(self, query: sa.Select[Any], resource: str) -> list[HORecord]:
        with self.engine.connect() as conn:
            return [HORecord(resource, r.id, r.version, r.data, bool(r.deleted), r.updated_at, r.change_seq)
                    for r in conn.execute(query)]

    def page_after(self, resource: str, after_seq: int, limit: int) -> list[HORecord]:
        """Up to ``limit`` changes of ``resource`` with change_seq > after_seq, in seq order."""
        q = (sa.select(*_REC_COLS).where(records.c.resource == resource, records.c.change_seq > after_seq)
             .order_by(records.c.change_seq).limit(limit))
        return self._rows(q, resource)

    def page_since(self, resource: str, since: str | None, offset: int, limit: int) -> list[HORecord]:
        """The seeds' legacy paging: updated_at > since, ordered by (updated_at, id), offset/limit."""
        q = sa.select(*_REC_COLS).where(records.c.resource == resource)
        if since is not None:
            q = q.where(records.c.updated_at > since)
        return self._rows(q.order_by(records.c.updated_at, records.c.id).offset(offset).limit(limit), resource)

    def cursor_bounds(self, resource: str) -> tuple[int, int]:
        """(purged_seq of the resource, the global change_seq): a valid cursor lies between them."""
        with self.engine.connect() as conn:
            purged = conn.execute(
                sa.select(resources.c.purged_seq).where(resources.c.resource == resource)
            ).scalar_one_or_none()
            top = conn.execute(sa.select(counter.c.value).where(counter.c.name == SEQ)).scalar_one()
        return int(purged or 0), int(top)

    def versions(self) -> tuple[int, dict[str, int]]:
        with self.engine.connect() as conn:
            top = conn.execute(sa.select(counter.c.value).where(counter.c.name == SEQ)).scalar_one()
            per = {r.resource: int(r.last_seq) for r in conn.execute(sa.select(resources))}
        return int(top), per

    def get(self, resource: str, entity_id: str) -> HORecord | None:
        rows = self._rows(sa.select(*_REC_COLS).where(records.c.resource == resource,
                                                      records.c.id == entity_id), resource)
        return rows[0] if rows else None

    def all_records(self, resource: str) -> dict[str, HORecord]:
        rows = self._rows(sa.select(*_REC_COLS).where(records.c.resource == resource)
                          .order_by(records.c.change_seq), resource)
        return {r.id: r for r in rows}

    def applied_counts(self, outlet_id: str | None = None,
                       idempotency_key: str | None = None) -> dict[tuple[str, str], int]:
        q = (sa.select(apply_log.c.outlet_id, apply_log.c.idempotency_key, sa.func.count())
             .group_by(apply_log.c.outlet_id, apply_log.c.idempotency_key))
        if outlet_id is not None:
            q = q.where(apply_log.c.outlet_id == outlet_id)
        if idempotency_key is not None:
            q = q.where(apply_log.c.idempotency_key == idempotency_key)
        with self.engine.connect() as conn:
            return {(o, k): int(n) for o, k, n in conn.execute(q)}

    def usages(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [{"outlet_id": r.outlet_id, "idempotency_key": r.idempotency_key, "data": r.data,
                     "received_at": r.received_at}
                    for r in conn.execute(sa.select(usage).order_by(usage.c.id))]

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            def n(t: sa.Table, *where: Any) -> int:
                return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(*where)).scalar_one())

            return {
                "records": n(records, records.c.deleted.is_(False)),
                "tombstones": n(records, records.c.deleted.is_(True)),
                "applied": n(apply_log),
                "idempotency_keys": n(idempotency),
                "usages": n(usage),
                "change_seq": int(conn.execute(sa.select(counter.c.value)
                                               .where(counter.c.name == SEQ)).scalar_one()),
            }


# Every write transaction runs these: plain driver SQL skips SQLAlchemy's statement compilation (~0.5 ms
# each). ``_pick`` chooses (SQLite, PostgreSQL); on SQLite, BEGIN IMMEDIATE already holds the write lock.
def _both(sql: str) -> tuple[str, str]:
    return sql, sql.replace("?", "%s")


_COUNTER_LOCK = ("SELECT value FROM ho_counter WHERE name = ?",
                 "SELECT value FROM ho_counter WHERE name = %s FOR UPDATE")
_COUNTER_SET = _both("UPDATE ho_counter SET value = ? WHERE name = ?")
_RESOURCES_TOUCH = _both("INSERT INTO ho_resources (resource, last_seq, purged_seq) VALUES (?, ?, 0) "
                         "ON CONFLICT (resource) DO UPDATE SET last_seq = excluded.last_seq")


def _pick(conn: Connection, sql: tuple[str, str]) -> str:
    return sql[0] if conn.dialect.name == "sqlite" else sql[1]


# Bulk writes bypass SQLAlchemy's per-row parameter processing, which cost more than the database work
# (the HO must apply >= 10,000 changes/s on SQLite). SQLite: the driver's executemany. PostgreSQL: one
# statement over unnest()ed column arrays, since a round trip per row is what costs there.
def _bulk_sql(table: str, cols: str, types: str) -> tuple[str, str]:
    names = [c.strip() for c in cols.split(",")]
    kinds = [t.strip() for t in types.split(",")]
    sqlite = f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' for _ in names)})"
    arrays = ", ".join(f"%s::{'text' if k == 'json' else k}[]" for k in kinds)
    picks = ", ".join(f"c{i}::json" if k == "json" else f"c{i}" for i, k in enumerate(kinds))
    alias = ", ".join(f"c{i}" for i in range(len(kinds)))
    return sqlite, f"INSERT INTO {table} ({cols}) SELECT {picks} FROM unnest({arrays}) AS t({alias})"


_RECORD_INSERT = _bulk_sql("ho_records", "resource, id, version, data, deleted, updated_at, change_seq",
                           "text, text, int, json, bool, text, bigint")
_RECORD_UPDATE = (
    "UPDATE ho_records SET version = ?, data = ?, deleted = ?, updated_at = ?, change_seq = ? "
    "WHERE resource = ? AND id = ?",
    "UPDATE ho_records AS h SET version = t.v, data = t.d::json, deleted = t.x, updated_at = t.u, "
    "change_seq = t.s FROM unnest(%s::int[], %s::text[], %s::bool[], %s::text[], %s::bigint[], %s::text[], "
    "%s::text[]) AS t(v, d, x, u, s, r, i) WHERE h.resource = t.r AND h.id = t.i",
)
_IDEMPOTENCY_INSERT = _bulk_sql("ho_idempotency", "outlet_id, idempotency_key, request_hash, result, created_at",
                                "text, text, text, json, text")
_LOG_INSERT = _bulk_sql("ho_apply_log", "outlet_id, idempotency_key, resource, entity_id, change_seq, applied_at",
                        "text, text, text, text, bigint, text")
_USAGE_INSERT = _bulk_sql("ho_usage", "outlet_id, idempotency_key, data, received_at", "text, text, json, text")


def _select_in(conn: Connection, head: str, first: str, values: list[str]) -> Sequence[Any]:
    """``head`` ends in a column; appends a membership test on ``values`` passed as ONE parameter (a JSON
    array through json_each on SQLite, an array with = ANY on PostgreSQL) instead of thousands."""
    if not values:
        return []
    if conn.dialect.name == "sqlite":
        sql, param = head + " IN (SELECT value FROM json_each(?))", canonical_json(values)
    else:
        sql, param = head.replace("?", "%s") + " = ANY(%s::text[])", values  # type: ignore[assignment]
    return conn.exec_driver_sql(sql, (first, param)).fetchall()


def _load(value: Any) -> Any:
    """JSON columns read through the driver: SQLite gives text, psycopg already-decoded values."""
    return loads_json(value) if isinstance(value, str | bytes) else value


def _executemany(conn: Connection, sql: tuple[str, str], rows: list[tuple[Any, ...]]) -> None:
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(sql[0], rows)
    else:
        conn.exec_driver_sql(sql[1], tuple(list(col) for col in zip(*rows, strict=True)))


def _applied_json(version: int) -> str:
    return f'{{"status":"applied","cloud_version":{int(version)}}}'


def _repeat(key: str, prior: tuple[str, Any], digest: str) -> dict[str, Any]:
    """The answer to a key HO already applied: duplicate if it is the same change, else a rejection."""
    if prior[0] == digest:
        return {"idempotency_key": key, **prior[1], "status": "duplicate"}
    return Rejection("IDEMPOTENCY_KEY_REUSED", "this idempotency key was applied to a different change").result(key)


def _current(entity_id: str, s: State | None) -> dict[str, Any]:
    if s is None:  # HO has no row: answered as a version-0 tombstone
        return {"id": entity_id, "version": 0, "deleted": True, "updated_at": None, "data": None}
    return {"id": entity_id, "version": s.version, "deleted": s.deleted, "updated_at": s.updated_at,
            "data": s.data}
