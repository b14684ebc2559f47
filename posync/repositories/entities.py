"""The host's tracked tables, as posync touches them: read rows to push, write HO's records.

posync's writes here run with capture suppressed (``posync.capture.suppressed``): HO's data is never
queued back to HO as a local change. Writing HO's data bumps ``version``: a host session holding the
old version then gets a stale-write error instead of silently overwriting what HO sent.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from posync.capture.triggers import suppressed
from posync.models.enums import SyncStatus
from posync.registry import Payload, TrackedEntity
from posync.repositories import driver
from posync.repositories.errors import storage_errors

__all__ = ["EntityRepository", "PushRow"]


class PushRow(NamedTuple):
    """What a push reads of a tracked row."""

    data: Payload  # what HO receives
    version: int  # the row's local version
    cloud_version: int | None  # HO's version of it, as last seen


class _RowReader:
    """How to read some columns of one tracked table on the driver's cursor: the SELECT, the primary
    key's bind processor, and each column's result processor (the conversions SQLAlchemy applies)."""

    def __init__(self, conn: Connection, entity: TrackedEntity, names: Sequence[str]) -> None:
        dialect = conn.dialect
        q = dialect.identifier_preparer
        self.names = tuple(names)
        self.table = q.format_table(entity.table)
        self.pk = q.quote(entity.pk.name)
        columns = f"SELECT {', '.join(q.quote(n) for n in self.names)} FROM {self.table}"
        self.select = f"{columns} WHERE {self.pk} IN ({{}})"
        type_codes = driver.column_types(conn, f"{columns} WHERE 1 = 0")
        self.bind_pk = entity.pk.type.dialect_impl(dialect).bind_processor(dialect)
        try:
            python_type = entity.pk.type.python_type
        except NotImplementedError:  # pragma: no cover - exotic types
            python_type = object
        # the wire id is the key as it is: a text key without a bind processor (pk_value converts nothing)
        self.plain_keys = self.bind_pk is None and python_type not in (int, uuid.UUID)
        self.convert = [(n, proc) for n, code in zip(self.names, type_codes, strict=True)
                        if (proc := entity.table.c[n].type.dialect_impl(dialect).result_processor(dialect, code))
                        is not None]

    def key(self, entity: TrackedEntity, entity_id: str) -> Any:
        value = entity.pk_value(entity_id)
        return value if self.bind_pk is None else self.bind_pk(value)

    def keys(self, entity: TrackedEntity, entity_ids: Iterable[str]) -> list[Any]:
        """:meth:`key` for many ids; a text key the driver takes as it is (the usual case) is not
        converted one by one."""
        if self.plain_keys:
            return list(entity_ids)
        return [self.key(entity, i) for i in entity_ids]


@storage_errors
class EntityRepository:
    def __init__(self) -> None:
        self._readers: dict[tuple[str, str, bool], _RowReader] = {}
        self._bind_cache: dict[tuple[str, ...], list[Any]] = {}

    def _reader(self, conn: Connection, entity: TrackedEntity, *, for_push: bool = False) -> _RowReader:
        cache_key = (conn.dialect.name, entity.resource, for_push)
        reader = self._readers.get(cache_key)
        if reader is None:
            names = ([*entity.data_columns, "version", "cloud_version"] if for_push
                     else [c.name for c in entity.table.columns])
            reader = self._readers[cache_key] = _RowReader(conn, entity, names)
        return reader

    def rows(self, conn: Connection, entity: TrackedEntity, entity_ids: Iterable[str], *,
             for_update: bool = False) -> dict[str, dict[str, Any]]:
        """Whole rows of these entities, by entity id, as plain dicts of column values."""
        return self._read(conn, entity, self._reader(conn, entity), entity_ids, for_update=for_update)

    def push_rows(self, conn: Connection, entity: TrackedEntity, entity_ids: Iterable[str]) -> dict[str, PushRow]:
        """What a push needs of these rows, by entity id. The other bookkeeping columns are not read."""
        reader = self._reader(conn, entity, for_push=True)
        at = {name: i for i, name in enumerate(reader.names)}
        convert = [(at[name], proc) for name, proc in reader.convert]
        version, cloud_version = at["version"], at["cloud_version"]
        out: dict[str, PushRow] = {}
        for row in driver.fetch_in(conn, reader.select, reader.keys(entity, entity_ids)):
            values: Sequence[Any] = row
            if convert:
                values = list(row)
                for i, proc in convert:
                    values[i] = proc(values[i])
            data = entity.payload_of(values)  # the data columns come first (_reader)
            out[entity.payload_id(data)] = PushRow(data, values[version], values[cloud_version])
        return out

    @staticmethod
    def _read(conn: Connection, entity: TrackedEntity, reader: _RowReader, entity_ids: Iterable[str], *,
              for_update: bool = False) -> dict[str, dict[str, Any]]:
        sql = reader.select + (" FOR UPDATE" if for_update and conn.dialect.name == "postgresql" else "")
        out: dict[str, dict[str, Any]] = {}
        names, pk, convert = reader.names, entity.pk.name, reader.convert
        for values in driver.fetch_in(conn, sql, reader.keys(entity, entity_ids)):
            row = dict(zip(names, values, strict=True))
            for name, proc in convert:
                row[name] = proc(row[name])
            out[str(row[pk])] = row
        return out

    def mark_pushed(self, conn: Connection, entity: TrackedEntity,
                    accepted: Sequence[tuple[str, int, int | None]],
                    queued: set[str] | frozenset[str] = frozenset()) -> None:
        """HO accepted changes, each ``(entity_id, HO's version, the local version pushed)``: record HO's
        version. The row is synced unless a later change of it is still ``queued``. A version older than
        one already applied (a pull got there first) changes nothing."""
        reader = self._reader(conn, entity)
        where = f"WHERE {reader.pk} = ? AND (cloud_version IS NULL OR cloud_version < ?)"
        done = f"UPDATE {reader.table} SET cloud_version = ?, sync_status = '{SyncStatus.SYNCED.value}' {where}"
        waits = f"UPDATE {reader.table} SET cloud_version = ? {where}"
        keys = reader.keys(entity, [entity_id for entity_id, _, _ in accepted])
        rows = [(entity_id in queued, (version, key, version))
                for (entity_id, version, _), key in zip(accepted, keys, strict=True)]
        with suppressed(conn):
            driver.executemany(conn, done, [params for later, params in rows if not later])
            driver.executemany(conn, waits, [params for later, params in rows if later])

    def set_status(self, conn: Connection, entity: TrackedEntity, entity_id: str, status: SyncStatus,
                   *, cloud_version: int | None = None) -> None:
        values: dict[str, Any] = {"sync_status": status.value}
        t = entity.table
        if cloud_version is not None:
            values["cloud_version"] = sa.case(
                (sa.or_(t.c.cloud_version.is_(None), t.c.cloud_version < cloud_version), cloud_version),
                else_=t.c.cloud_version)
        with suppressed(conn):
            conn.execute(t.update().where(entity.pk == entity.pk_value(entity_id)).values(**values))

    def write_remote(self, conn: Connection, entity: TrackedEntity, rows: Sequence[dict[str, Any]],
                     existing: set[str], now: datetime) -> None:
        """Write HO records (already converted by ``TrackedEntity.from_remote`` and decided to apply, each
        with its ``cloud_version``) as synced rows. ``existing``: ids that have a local row. Columns a
        record does not carry are left as they are (an update) or take their defaults (an insert)."""
        inserts: list[dict[str, Any]] = []
        updates: dict[frozenset[str], list[dict[str, Any]]] = defaultdict(list)
        pk = entity.pk.name
        for row in rows:
            values = dict(row)
            values.setdefault("updated_at", now)
            values["sync_status"] = SyncStatus.SYNCED.value
            if str(values[pk]) in existing:
                updates[frozenset(values)].append(values)
            else:
                values["version"] = 1
                inserts.append(values)
        t = entity.table
        every = frozenset(c.name for c in t.columns)
        fast = conn.dialect.name == "sqlite"  # psycopg's executemany is a round trip a row: SQLAlchemy batches
        with suppressed(conn):
            for columns, group in updates.items():
                if fast:
                    self._driver_update(conn, entity, tuple(c for c in columns if c != pk), group)
                    continue
                stmt = t.update().where(entity.pk == sa.bindparam("b_pk")).values(
                    {c: sa.bindparam(f"v_{c}") for c in columns if c != pk} | {"version": t.c.version + 1})
                conn.execute(stmt, [{"b_pk": r[pk]} | {f"v_{c}": r[c] for c in columns if c != pk} for r in group])
            if inserts:
                by_shape: dict[frozenset[str], list[dict[str, Any]]] = defaultdict(list)
                for row in inserts:
                    by_shape[frozenset(row)].append(row)
                for shape, group in by_shape.items():
                    if fast and shape == every:  # no column left to a default SQLAlchemy would fill
                        self._driver_insert(conn, entity, tuple(sorted(shape)), group)
                    else:
                        conn.execute(t.insert(), group)

    # Applying a page is a thousand rows at a time: on SQLite the driver's executemany with each column's
    # own bind conversion costs half of SQLAlchemy's per-row parameter processing (bench/README.md).
    def _binds(self, conn: Connection, entity: TrackedEntity, columns: Sequence[str]) -> list[Any]:
        dialect = conn.dialect
        key = (dialect.name, entity.resource, *columns)
        binds = self._bind_cache.get(key)
        if binds is None:
            binds = self._bind_cache[key] = [
                entity.table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
        return binds

    def _driver_insert(self, conn: Connection, entity: TrackedEntity, columns: tuple[str, ...],
                       rows: Sequence[dict[str, Any]]) -> None:
        q = conn.dialect.identifier_preparer
        binds = self._binds(conn, entity, columns)
        sql = (f"INSERT INTO {q.format_table(entity.table)} ({', '.join(q.quote(c) for c in columns)}) "
               f"VALUES ({', '.join('?' for _ in columns)})")
        driver.executemany(conn, sql, [[v if b is None else b(v) for b, v in zip(binds, (r[c] for c in columns),
                                                                                     strict=True)] for r in rows])

    def _driver_update(self, conn: Connection, entity: TrackedEntity, columns: tuple[str, ...],
                       rows: Sequence[dict[str, Any]]) -> None:
        q = conn.dialect.identifier_preparer
        pk = entity.pk.name
        binds = self._binds(conn, entity, (*columns, pk))
        sets = ", ".join(f"{q.quote(c)} = ?" for c in columns)
        sql = f"UPDATE {q.format_table(entity.table)} SET {sets}, version = version + 1 WHERE {q.quote(pk)} = ?"
        names = (*columns, pk)
        driver.executemany(conn, sql, [[v if b is None else b(v) for b, v in zip(binds, (r[c] for c in names),
                                                                                     strict=True)] for r in rows])

    def write_local(self, conn: Connection, entity: TrackedEntity, entity_id: str, data: dict[str, Any],
                    now: datetime) -> None:
        """Write a merged record as a local change (version bumped, status pending). The caller queues
        the change itself."""
        values = entity.from_remote({**data, entity.pk.name: entity_id})
        values.pop(entity.pk.name, None)
        values.pop("updated_at", None)
        values.update(updated_at=now, sync_status=SyncStatus.PENDING.value, version=entity.table.c.version + 1)
        with suppressed(conn):
            conn.execute(entity.table.update().where(entity.pk == entity.pk_value(entity_id)).values(**values))

    def delete(self, conn: Connection, entity: TrackedEntity, entity_ids: Sequence[str]) -> None:
        """Delete rows as HO said (not captured: HO already knows)."""
        ids = [entity.pk_value(i) for i in entity_ids]
        with suppressed(conn):
            for i in range(0, len(ids), driver.CHUNK):
                conn.execute(entity.table.delete().where(entity.pk.in_(ids[i : i + driver.CHUNK])))

    def ids_known_to_ho(self, conn: Connection, entity: TrackedEntity) -> set[str]:
        """Ids of local rows that HO has had (a ``cloud_version``): the candidates of a reconciliation."""
        t = entity.table
        return {str(v) for v in conn.execute(sa.select(entity.pk).where(t.c.cloud_version.is_not(None))).scalars()}

    def count_unknown_to_ho(self, conn: Connection, entity: TrackedEntity) -> int:
        t = entity.table
        return int(conn.execute(sa.select(sa.func.count()).select_from(t)
                                .where(t.c.cloud_version.is_(None))).scalar() or 0)

    def count_known_to_ho(self, conn: Connection, entity: TrackedEntity) -> int:
        t = entity.table
        return int(conn.execute(sa.select(sa.func.count()).select_from(t)
                                .where(t.c.cloud_version.is_not(None))).scalar() or 0)
