"""Capture in the database: triggers on every pushed table write the outbox row in the statement that
changed the host's row, whatever wrote it.

The ORM's unit of work, ``session.execute(insert(...))``, upserts, the ``bulk_*`` methods, relationship
and delete-orphan cascades, savepoints, Core, raw SQL, ``AsyncSession`` and other processes all end in
INSERT, UPDATE or DELETE statements; the triggers see every one of them, in the same transaction. What a
trigger writes:

* INSERT: ``create`` (base: none). The new row's ``cloud_version`` is cleared: a new row has no HO version.
  SQLite's ``INSERT OR REPLACE`` of an existing row is the ``update`` it amounts to (based on the replaced
  row's version, which the new row keeps).
* UPDATE of data columns: ``update`` based on the row's ``cloud_version`` *before* the statement (the
  database's own value, so never stale). ``sync_status`` becomes pending.
* UPDATE of the primary key: ``delete`` of the old key and ``create`` of the new one.
* DELETE: ``delete`` based on the row's ``cloud_version``.
* TRUNCATE (PostgreSQL; it fires no row triggers): a ``delete`` of every row, written before the table
  empties, as ``DELETE FROM`` would. SQLite has no TRUNCATE (its ``DELETE FROM`` fires the row triggers).
* An UPDATE that touches only bookkeeping (``cloud_version``, ``sync_status``) is undone: those columns
  are posync's alone (a host's ``session.merge()`` of an object it built would otherwise null them).
* Append-only tables (usage logs) take inserts only: updating one, or deleting (or truncating) one HO
  has not received, is refused with an error naming the pattern (deleting a synced row is a local purge,
  not pushed).

posync's own writes to host tables (applying HO's records, recording versions) run with capture
*suppressed* (:func:`suppressed`): on PostgreSQL a transaction-local setting (``posync.capture``), on
SQLite a row in ``posync_capture_off`` that exists only inside posync's own uncommitted transaction.
New items are due at once (``available_at`` 0): nothing waits on a clock.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from posync.errors import ConfigurationError
from posync.models.tracked import BOOKKEEPING_COLUMNS
from posync.registry import Registry, TrackedEntity

__all__ = ["APPEND_ONLY_DELETE", "APPEND_ONLY_UPDATE", "REFUSAL_PREFIX", "install", "installed", "refusal",
           "suppressed", "trigger_sql", "uninstall"]

OUTBOX = "posync_outbox"
GUARD = "posync_capture_off"
REPLACED = "posync_capture_replaced"
# every refusal a trigger raises reads "posync refuses <pattern> [<resource>]: <the supported way>"; the
# engine's handle_error turns it back into an UnsupportedWriteError (posync.capture.errors)
REFUSAL_PREFIX = "posync refuses"
APPEND_ONLY_UPDATE = ("an UPDATE of an append-only row", "insert a new, correcting row instead")
APPEND_ONLY_DELETE = ("a DELETE of an append-only row HO has not received",
                      "delete it once it is synced (a local purge), or leave it")


def refusal(what: tuple[str, str], resource: str) -> str:
    return f"{REFUSAL_PREFIX} {what[0]} [{resource}]: {what[1]}"


# the row of a captured change: the columns posync.models.outbox.queued_change fills when posync queues one
_COLUMNS = "resource, entity_id, op, entity_version, base_version, status, attempts, available_at, changed_at"
_INFO_DEPTH = "posync.capture_suppressed"


# -- suppression ------------------------------------------------------------------------------------------


@contextmanager
def suppressed(conn: Connection) -> Iterator[None]:
    """posync's own writes to host tables inside this block are not captured. Re-entrant; the block must
    stay inside one transaction (the marker never outlives it: on SQLite it is an uncommitted row)."""
    depth = int(conn.info.get(_INFO_DEPTH, 0))
    if depth == 0:
        _switch(conn, off=True)
    conn.info[_INFO_DEPTH] = depth + 1
    try:
        yield
    finally:
        conn.info[_INFO_DEPTH] = depth
        if depth == 0:
            # in a failed transaction this fails too; its rollback removes the marker anyway
            with contextlib.suppress(sa.exc.DBAPIError):
                _switch(conn, off=False)


def _switch(conn: Connection, *, off: bool) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT set_config('posync.capture', %s, true)", ("off" if off else "on",))
    elif off:
        conn.exec_driver_sql(f"INSERT OR REPLACE INTO {GUARD} (id) VALUES (1)")
    else:
        conn.exec_driver_sql(f"DELETE FROM {GUARD}")


# -- SQLite -------------------------------------------------------------------------------------------------


def _name(kind: str, table: str) -> str:
    short = table if len(table) <= 40 else table[:31] + "_" + hashlib.sha1(table.encode()).hexdigest()[:8]
    return f"posync_{kind}_{short}"


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sqlite_id(entity: TrackedEntity, row: str) -> str:
    """The entity id as posync spells it on the wire, from the stored key (a UUID is kept as 32 hex digits)."""
    col = f'{row}."{entity.pk.name}"'
    impl = entity.pk.type
    if isinstance(impl, sa.types.TypeDecorator):
        impl = impl.impl_instance
    if isinstance(impl, sa.Uuid):
        parts = [f"substr({col},{start},{length})" for start, length in ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))]
        dashed = "||'-'||".join(parts)
        return f"lower({dashed})"
    return f"CAST({col} AS TEXT)"


def _sqlite_triggers(entity: TrackedEntity) -> list[tuple[str, str]]:
    table = entity.table.name
    q = f'"{table}"'
    pk = f'"{entity.pk.name}"'
    res = _lit(entity.resource)
    now = "strftime('%Y-%m-%d %H:%M:%f','now')"
    guard = f"NOT EXISTS (SELECT 1 FROM {GUARD})"
    data = [c for c in entity.data_columns if c != entity.pk.name]
    data_changed = " OR ".join(f'NEW."{c}" IS NOT OLD."{c}"' for c in data) or "0"
    key_changed = f"NEW.{pk} IS NOT OLD.{pk}"
    keep = "(NEW.cloud_version IS NOT OLD.cloud_version OR NEW.sync_status IS NOT OLD.sync_status)"
    new_id, old_id = _sqlite_id(entity, "NEW"), _sqlite_id(entity, "OLD")

    def item(op: str, rid: str, version: str, base: str) -> str:
        return f"{res}, {rid}, '{op}', {version}, {base}, 'pending', 0, 0, {now}"

    # SQLite's INSERT OR REPLACE deletes the old row without firing delete triggers: the row it replaces
    # is noted before the insert, and the insert is then queued as the update it is
    replaced = f"{REPLACED} WHERE resource = {res} AND entity_id = {new_id}"
    if entity.append_only:
        triggers = [(_name("ins", table), (
            f"CREATE TRIGGER {_name('ins', table)} AFTER INSERT ON {q} WHEN {guard} BEGIN "
            f"INSERT INTO {OUTBOX} ({_COLUMNS}) VALUES ({item('create', new_id, 'NEW.version', 'NULL')}); "
            f"INSERT OR IGNORE INTO {GUARD} (id) SELECT 2 FROM {q} WHERE {pk} = NEW.{pk} "
            f"AND (cloud_version IS NOT NULL OR sync_status IS NOT 'pending'); "
            f"UPDATE {q} SET cloud_version = NULL, sync_status = 'pending' WHERE {pk} = NEW.{pk} "
            f"AND (cloud_version IS NOT NULL OR sync_status IS NOT 'pending'); DELETE FROM {GUARD} WHERE id = 2; END"))]
    else:
        base = f"(SELECT cloud_version FROM {replaced})"
        op = f"CASE WHEN EXISTS (SELECT 1 FROM {replaced}) THEN 'update' ELSE 'create' END"
        triggers = [
            (_name("bins", table), (
                f"CREATE TRIGGER {_name('bins', table)} BEFORE INSERT ON {q} WHEN {guard} BEGIN "
                f"DELETE FROM {replaced}; "
                f"INSERT INTO {REPLACED} (resource, entity_id, cloud_version) SELECT {res}, {new_id}, cloud_version "
                f"FROM {q} WHERE {pk} = NEW.{pk}; END")),
            (_name("ins", table), (
                f"CREATE TRIGGER {_name('ins', table)} AFTER INSERT ON {q} WHEN {guard} BEGIN "
                f"INSERT INTO {OUTBOX} ({_COLUMNS}) VALUES ({res}, {new_id}, {op}, NEW.version, {base}, 'pending', "
                f"0, 0, {now}); "
                # the fix-up is an UPDATE, whose trigger would undo it: it runs with capture off
                f"INSERT OR IGNORE INTO {GUARD} (id) SELECT 2 FROM {q} WHERE {pk} = NEW.{pk} "
                f"AND (cloud_version IS NOT {base} OR sync_status IS NOT 'pending'); "
                f"UPDATE {q} SET cloud_version = {base}, sync_status = 'pending' WHERE {pk} = NEW.{pk} "
                f"AND (cloud_version IS NOT {base} OR sync_status IS NOT 'pending'); "
                f"DELETE FROM {GUARD} WHERE id = 2; DELETE FROM {replaced}; END")),
        ]
    if entity.append_only:
        triggers += [
            (_name("upd", table), (
                f"CREATE TRIGGER {_name('upd', table)} BEFORE UPDATE ON {q} WHEN {guard} "
                f"AND ({key_changed} OR {data_changed}) BEGIN SELECT RAISE(ABORT, "
                f"{_lit(refusal(APPEND_ONLY_UPDATE, entity.resource))}); END")),
            (_name("keep", table), (
                f"CREATE TRIGGER {_name('keep', table)} AFTER UPDATE ON {q} WHEN {guard} AND {keep} BEGIN "
                f"UPDATE {q} SET cloud_version = OLD.cloud_version, sync_status = OLD.sync_status "
                f"WHERE {pk} = NEW.{pk}; END")),
            (_name("del", table), (
                f"CREATE TRIGGER {_name('del', table)} BEFORE DELETE ON {q} WHEN {guard} "
                f"AND OLD.sync_status IS NOT 'synced' BEGIN SELECT RAISE(ABORT, "
                f"{_lit(refusal(APPEND_ONLY_DELETE, entity.resource))}); END")),
        ]
        return triggers
    changed = f"({key_changed} OR {data_changed})"
    # bookkeeping is posync's: a new key has no HO version, a data change is pending, and whatever else the
    # statement did to these two columns is undone
    cv = f"CASE WHEN {key_changed} THEN NULL ELSE OLD.cloud_version END"
    st = f"CASE WHEN {changed} THEN 'pending' ELSE OLD.sync_status END"
    triggers += [
        (_name("upd", table), (
            f"CREATE TRIGGER {_name('upd', table)} AFTER UPDATE ON {q} WHEN {guard} "
            f"AND ({key_changed} OR {data_changed} OR {keep}) BEGIN "
            f"INSERT INTO {OUTBOX} ({_COLUMNS}) SELECT {item('update', new_id, 'NEW.version', 'OLD.cloud_version')} "
            f"WHERE NOT ({key_changed}) AND ({data_changed}); "
            f"INSERT INTO {OUTBOX} ({_COLUMNS}) SELECT {item('delete', old_id, 'OLD.version', 'OLD.cloud_version')} "
            f"WHERE {key_changed}; "
            f"INSERT INTO {OUTBOX} ({_COLUMNS}) SELECT {item('create', new_id, 'NEW.version', 'NULL')} "
            f"WHERE {key_changed}; "
            f"UPDATE {q} SET cloud_version = {cv}, sync_status = {st} WHERE {pk} = NEW.{pk} "
            f"AND (cloud_version IS NOT ({cv}) OR sync_status IS NOT ({st})); END")),
        (_name("del", table), (
            f"CREATE TRIGGER {_name('del', table)} AFTER DELETE ON {q} WHEN {guard} BEGIN "
            f"INSERT INTO {OUTBOX} ({_COLUMNS}) VALUES ({item('delete', old_id, 'OLD.version', 'OLD.cloud_version')}); "
            f"DELETE FROM {REPLACED} WHERE resource = {res} AND entity_id = {old_id}; END")),
    ]
    return triggers


# -- PostgreSQL ---------------------------------------------------------------------------------------------

_BOOKKEEPING = "ARRAY[" + ", ".join(_lit(c) for c in sorted(BOOKKEEPING_COLUMNS)) + "]::text[]"

_PG_BEFORE = f"""CREATE OR REPLACE FUNCTION posync_capture_before() RETURNS trigger LANGUAGE plpgsql AS $posync$
-- TG_ARGV: resource, primary key column, 'append_only' or 'regular'
BEGIN
  IF current_setting('posync.capture', true) = 'off' THEN
    RETURN COALESCE(NEW, OLD);
  END IF;
  IF TG_OP = 'INSERT' THEN
    NEW.cloud_version := NULL;
    NEW.sync_status := 'pending';
    RETURN NEW;
  END IF;
  IF TG_OP = 'DELETE' THEN
    IF TG_ARGV[2] = 'append_only' AND OLD.sync_status IS DISTINCT FROM 'synced' THEN
      RAISE EXCEPTION '{refusal(APPEND_ONLY_DELETE, "%")}', TG_ARGV[0] USING ERRCODE = 'check_violation';
    END IF;
    RETURN OLD;
  END IF;
  IF (to_jsonb(NEW) - {_BOOKKEEPING}) IS DISTINCT FROM (to_jsonb(OLD) - {_BOOKKEEPING}) THEN
    IF TG_ARGV[2] = 'append_only' THEN
      RAISE EXCEPTION '{refusal(APPEND_ONLY_UPDATE, "%")}', TG_ARGV[0] USING ERRCODE = 'check_violation';
    END IF;
    IF (to_jsonb(NEW) ->> TG_ARGV[1]) IS DISTINCT FROM (to_jsonb(OLD) ->> TG_ARGV[1]) THEN
      NEW.cloud_version := NULL;  -- a new key is a new entity
    ELSE
      NEW.cloud_version := OLD.cloud_version;
    END IF;
    NEW.sync_status := 'pending';
  ELSE
    NEW.cloud_version := OLD.cloud_version;
    NEW.sync_status := OLD.sync_status;
  END IF;
  RETURN NEW;
END
$posync$"""

_PG_AFTER = f"""CREATE OR REPLACE FUNCTION posync_capture_after() RETURNS trigger LANGUAGE plpgsql AS $posync$
DECLARE
  new_id text;
  old_id text;
BEGIN
  IF current_setting('posync.capture', true) = 'off' THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO {OUTBOX} ({_COLUMNS}) VALUES
      (TG_ARGV[0], to_jsonb(NEW) ->> TG_ARGV[1], 'create', NEW.version, NULL, 'pending', 0, 0, clock_timestamp());
    RETURN NULL;
  END IF;
  IF TG_ARGV[2] = 'append_only' THEN
    RETURN NULL;  -- an update was refused before; a delete of a synced row is a local purge
  END IF;
  IF TG_OP = 'DELETE' THEN
    INSERT INTO {OUTBOX} ({_COLUMNS}) VALUES
      (TG_ARGV[0], to_jsonb(OLD) ->> TG_ARGV[1], 'delete', OLD.version, OLD.cloud_version, 'pending', 0, 0,
       clock_timestamp());
    RETURN NULL;
  END IF;
  new_id := to_jsonb(NEW) ->> TG_ARGV[1];
  old_id := to_jsonb(OLD) ->> TG_ARGV[1];
  IF new_id IS DISTINCT FROM old_id THEN
    INSERT INTO {OUTBOX} ({_COLUMNS}) VALUES
      (TG_ARGV[0], old_id, 'delete', OLD.version, OLD.cloud_version, 'pending', 0, 0, clock_timestamp()),
      (TG_ARGV[0], new_id, 'create', NEW.version, NULL, 'pending', 0, 0, clock_timestamp());
  ELSIF (to_jsonb(NEW) - {_BOOKKEEPING}) IS DISTINCT FROM (to_jsonb(OLD) - {_BOOKKEEPING}) THEN
    INSERT INTO {OUTBOX} ({_COLUMNS}) VALUES
      (TG_ARGV[0], new_id, 'update', NEW.version, OLD.cloud_version, 'pending', 0, 0, clock_timestamp());
  END IF;
  RETURN NULL;
END
$posync$"""


# TRUNCATE fires no row trigger: before the table empties, queue the delete DELETE FROM would (each row's
# key and versions), or refuse while an append-only table holds a row HO has not received
_PG_TRUNCATE = f"""CREATE OR REPLACE FUNCTION posync_capture_truncate() RETURNS trigger LANGUAGE plpgsql AS $posync$
-- TG_ARGV: resource, primary key column, 'append_only' or 'regular'
DECLARE
  unsent boolean;
BEGIN
  IF current_setting('posync.capture', true) = 'off' THEN
    RETURN NULL;
  END IF;
  IF TG_ARGV[2] = 'append_only' THEN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I WHERE sync_status IS DISTINCT FROM %L)',
                   TG_TABLE_SCHEMA, TG_TABLE_NAME, 'synced') INTO unsent;
    IF unsent THEN
      RAISE EXCEPTION '{refusal(APPEND_ONLY_DELETE, "%")}', TG_ARGV[0] USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;  -- every row synced: a local purge
  END IF;
  -- row.*: the whole row, even when the host's table has a column named like the alias
  EXECUTE format('INSERT INTO {OUTBOX} ({_COLUMNS}) SELECT %L, to_jsonb(posync_row.*) ->> %L, %L, '
                 'posync_row.version, posync_row.cloud_version, %L, 0, 0, clock_timestamp() '
                 'FROM %I.%I posync_row',
                 TG_ARGV[0], TG_ARGV[1], 'delete', 'pending', TG_TABLE_SCHEMA, TG_TABLE_NAME);
  RETURN NULL;
END
$posync$"""


def _pg_triggers(entity: TrackedEntity) -> list[tuple[str, str]]:
    table = entity.table.name
    q = f'"{table}"'
    kind = "append_only" if entity.append_only else "regular"
    args = f"{_lit(entity.resource)}, {_lit(entity.pk.name)}, {_lit(kind)}"
    before, after, truncate = _name("before", table), _name("after", table), _name("truncate", table)
    return [
        (before, f"CREATE OR REPLACE TRIGGER {before} BEFORE INSERT OR UPDATE OR DELETE ON {q} "
                 f"FOR EACH ROW EXECUTE FUNCTION posync_capture_before({args})"),
        (after, f"CREATE OR REPLACE TRIGGER {after} AFTER INSERT OR UPDATE OR DELETE ON {q} "
                f"FOR EACH ROW EXECUTE FUNCTION posync_capture_after({args})"),
        (truncate, f"CREATE OR REPLACE TRIGGER {truncate} BEFORE TRUNCATE ON {q} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION posync_capture_truncate({args})"),
    ]


# -- installing ---------------------------------------------------------------------------------------------


def _pushed(registry: Registry) -> list[TrackedEntity]:
    return [e for e in registry if e.direction.pushes]


def trigger_sql(dialect_name: str, entity: TrackedEntity) -> list[tuple[str, str]]:
    """(name, CREATE statement) of each trigger capture puts on ``entity``'s table."""
    if dialect_name == "sqlite":
        return _sqlite_triggers(entity)
    if dialect_name == "postgresql":
        return _pg_triggers(entity)
    raise ConfigurationError(f"posync captures changes on SQLite and PostgreSQL, not {dialect_name}")


def _existing(conn: Connection, tables: Sequence[str]) -> dict[str, str]:
    """Capture triggers already on these tables: name -> stored definition."""
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'posync\\_%' ESCAPE '\\'")
        return {name: sql for name, sql in rows}
    rows = conn.exec_driver_sql(
        "SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE NOT t.tgisinternal AND t.tgname LIKE 'posync\\_%%' AND c.relname = ANY(%s)", (list(tables),))
    return {name: sql for name, sql in rows}


def _normal(sql: str) -> str:
    return " ".join(sql.replace("CREATE OR REPLACE TRIGGER", "CREATE TRIGGER").split()).lower()


def install(engine: Engine | Connection, registry: Registry) -> int:
    """Put capture triggers on every pushed table (idempotent: an unchanged trigger is left alone).
    Returns how many were (re)created. The tables must exist: create the host's tables first."""
    if isinstance(engine, Connection):
        return _install(engine, registry)
    from posync.migrations import locked  # several worker processes start together: one installs at a time

    with locked(engine) as conn:
        return _install(conn, registry)


def _install(conn: Connection, registry: Registry) -> int:
    entities = _pushed(registry)
    if not entities:
        return 0
    dialect = conn.dialect.name
    inspector = sa.inspect(conn)
    missing = [e.table.name for e in entities if not inspector.has_table(e.table.name)]
    if missing:
        raise ConfigurationError(f"posync captures changes of tables that do not exist yet: {missing}; create "
                                 "the host's tables (and run posync.migrations.upgrade) before Posync(...)")
    if not inspector.has_table(GUARD):
        raise ConfigurationError("posync's tables are missing or old: run posync.migrations.upgrade(engine)")
    if dialect == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtextextended('posync.capture.install', 0))")
        stored = {name: src for name, src in conn.exec_driver_sql(
            "SELECT proname, prosrc FROM pg_proc WHERE proname IN ('posync_capture_before', 'posync_capture_after', "
            "'posync_capture_truncate')")}
        for name, fn in (("posync_capture_before", _PG_BEFORE), ("posync_capture_after", _PG_AFTER),
                         ("posync_capture_truncate", _PG_TRUNCATE)):
            if stored.get(name) != fn.split("$posync$")[1]:  # DDL only when the function changed
                conn.exec_driver_sql(fn.replace("%", "%%"))
    have = _existing(conn, [e.table.name for e in entities])
    created = 0
    for entity in entities:
        wanted = trigger_sql(dialect, entity)
        names = {name for name, _ in wanted}
        for name, sql in wanted:
            if name in have and _same(dialect, have[name], sql):
                continue
            if dialect == "sqlite":
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
            conn.exec_driver_sql(sql.replace("%", "%%") if dialect == "postgresql" else sql)
            created += 1
        stale = [n for n in have if n not in names and n.endswith("_" + entity.table.name)
                 and n.split("_", 2)[1] in ("bins", "ins", "upd", "del", "keep", "before", "after", "truncate")]
        for name in stale:  # e.g. an entity that became append-only keeps no old update trigger
            _drop(conn, name, entity.table.name)
    return created


def _same(dialect: str, stored: str, wanted: str) -> bool:
    if dialect == "sqlite":
        return _normal(stored) == _normal(wanted)
    # pg_get_triggerdef spells the statement its own way; compare what matters
    return all(part in _normal(stored) for part in _normal(wanted).split(" execute function ")[1:])


def _drop(conn: Connection, name: str, table: str) -> None:
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
    else:
        conn.exec_driver_sql(f'DROP TRIGGER IF EXISTS {name} ON "{table}"')


def installed(conn: Connection, registry: Registry) -> dict[str, bool]:
    """Per pushed resource: are all its capture triggers in place (a host migration that rebuilt the
    table drops them)."""
    entities = _pushed(registry)
    have = _existing(conn, [e.table.name for e in entities])
    return {e.resource: all(name in have for name, _ in trigger_sql(conn.dialect.name, e)) for e in entities}


def uninstall(engine: Engine, registry: Registry) -> None:
    """Remove capture triggers from the registry's tables (e.g. before dropping a tracked table)."""
    with engine.begin() as conn:
        for entity in _pushed(registry):
            for name, _ in trigger_sql(conn.dialect.name, entity):
                _drop(conn, name, entity.table.name)
