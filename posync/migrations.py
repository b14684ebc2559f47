"""Run posync's Alembic migrations against an engine (the host's, usually).

    from posync.migrations import locked, upgrade
    upgrade(engine)            # idempotent; safe at every start-up, in every worker process at once

    with locked(engine) as conn:           # the host's own start-up DDL under the same lock
        upgrade(conn)
        SQLModel.metadata.create_all(conn)

The scripts live in the repository's ``migrations/`` and ship as ``posync._migrations``. Alembic is
imported only when there is something to do: a database already at :data:`HEAD` is recognised by one
read of the version table, so ``import posync`` and every start-up skip Alembic's import and set-up.

posync's tables are posync's: they live in their own ``MetaData`` (``posync.models.metadata``), so the
host's ``create_all`` never makes them, and :func:`include_object` keeps them out of the host's Alembic
autogenerate (``context.configure(..., include_object=posync.migrations.include_object)``). ``Posync(...)``
refuses to start (:func:`require_current`) on a schema posync's migrations did not make.

Several worker processes of one POS start together (``uvicorn --workers 4``): DDL runs one process at a
time under :func:`locked`, a transaction that holds a lock across processes (PostgreSQL: an advisory
transaction lock; SQLite: the database's write lock, ``BEGIN IMMEDIATE``). Whoever comes second finds the
work done and does nothing.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from posync.db import committed, defer
from posync.errors import ConfigurationError, StorageError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["HEAD", "VERSION_TABLE", "alembic_config", "current", "downgrade", "include_object", "is_new", "locked",
           "require_current", "upgrade"]

log = logging.getLogger("posync.migrations")

HEAD = "0006"  # the newest script's revision (a test holds it equal to Alembic's own head)
VERSION_TABLE = "posync_alembic_version"


def alembic_config() -> Config:
    from alembic.config import Config

    scripts = importlib.import_module("posync._migrations")  # the top-level migrations/, as packaged
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(str(scripts.__file__)).parent))
    return cfg


LOCK_KEY = "posync.migrations"  # PostgreSQL: hashed into the advisory lock's key
LOCK_WAIT = 120.0  # seconds a process waits for another's start-up DDL (SQLite: beyond its busy timeout)


@contextmanager
def locked(engine: Engine) -> Iterator[Connection]:
    """A transaction holding posync's start-up lock across processes; commits on success, rolls back on
    an exception. Run posync's :func:`upgrade` and the host's own ``create_all`` (or Alembic) in it when
    several processes start together."""
    with engine.connect() as conn:
        _take_lock(conn)
        with committed(conn):
            yield conn


def _take_lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": LOCK_KEY})
        return
    if conn.dialect.name != "sqlite":
        return  # another database: its own DDL locking decides
    defer(conn)  # a till already writing in another worker goes first
    give_up = time.monotonic() + LOCK_WAIT
    while True:  # the busy timeout (5 s by default) may be shorter than another process's migration
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        except OperationalError as exc:
            conn.rollback()
            if "locked" not in str(exc.orig) or time.monotonic() > give_up:
                raise StorageError("take posync's start-up lock", type(exc.orig).__name__) from exc


def upgrade(bind: Engine | Connection, revision: str = "head") -> None:
    """Bring posync's tables to ``revision``. With an engine: under :func:`locked`, and only when the
    version table says there is work. With a connection: in the caller's transaction (hold the lock)."""
    if isinstance(bind, Connection):
        _run(bind, "upgrade", revision)
        return
    if revision in ("head", HEAD) and _stamped(bind) == HEAD:
        return
    with locked(bind) as conn:
        _run(conn, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    with locked(engine) as conn:
        _run(conn, "downgrade", revision)


def _run(conn: Connection, direction: str, revision: str) -> None:
    """Alembic in ``conn``'s transaction; it reads the version table itself, so a process that waited for
    the lock finds the work done."""
    before = _stamped(conn)
    if direction == "upgrade" and revision in ("head", HEAD) and before == HEAD:
        return
    with _alembic_quiet():  # its import logs too (its plugins)
        from alembic import command

        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        getattr(command, direction)(cfg, revision)
    after = _stamped(conn)
    if after != before:
        log.info("posync tables: %s %s -> %s", direction, before or "none", after or "none",
                 extra={"event": "schema.migrated", "from_revision": before, "to_revision": after})


_ALEMBIC_LOGGERS = ("alembic", "alembic.runtime.migration", "alembic.runtime.plugins")  # those that log at INFO


class _OtherThreadsOrWarnings(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.thread != self.thread


@contextmanager
def _alembic_quiet() -> Iterator[None]:
    """Alembic's INFO lines (its plugins, each script) while posync migrates its own tables, in this
    thread only: the host's log gets posync's one line instead. Warnings pass, and so does the host's
    own Alembic in other threads."""
    quiet = _OtherThreadsOrWarnings()
    names = {*_ALEMBIC_LOGGERS, *(n for n in list(logging.root.manager.loggerDict) if n.startswith("alembic."))}
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def _stamped(bind: Engine | Connection) -> str | None:
    """The one revision the version table holds, or None (no table yet, or anything unusual: Alembic decides)."""
    if isinstance(bind, Connection):  # inside the caller's transaction: a failed read must not abort it
        if not _has_version_table(bind):
            return None
        rows = bind.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
        return rows[0][0] if len(rows) == 1 else None
    try:
        with bind.connect() as conn:
            rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
            conn.rollback()
    except DBAPIError:
        return None
    return rows[0][0] if len(rows) == 1 else None


def _has_version_table(conn: Connection) -> bool:
    from sqlalchemy import inspect

    return inspect(conn).has_table(VERSION_TABLE)


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """For the host's Alembic ``env.py``: leave posync's tables (and their indexes, constraints and version
    table) to posync's own migrations, so autogenerate neither drops nor recreates them."""
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return not (isinstance(table, str) and table.startswith("posync_"))


def _posync_tables(engine: Engine) -> list[str]:
    from sqlalchemy import inspect

    with engine.connect() as conn:
        return sorted(n for n in inspect(conn).get_table_names() if n.startswith("posync_") and n != VERSION_TABLE)


def is_new(engine: Engine) -> bool:
    """No posync table at all: a database posync has never touched (its migrations may make them)."""
    return _stamped(engine) is None and not _posync_tables(engine)


def require_current(engine: Engine) -> None:
    """Refuse, with the fix in the message, a database whose posync tables posync's migrations did not
    make or have not brought to :data:`HEAD`."""
    stamped = _stamped(engine)
    if stamped == HEAD:
        return
    ours = _posync_tables(engine)
    if stamped is None and ours:
        raise ConfigurationError(
            f"posync's tables ({', '.join(ours[:3])}, ...) exist but posync's migrations did not make them (no "
            f"{VERSION_TABLE}): a create_all of another metadata made them. Drop them and run "
            "posync.migrations.upgrade(engine) (or `posync db upgrade`)")
    if stamped is None:
        raise ConfigurationError("posync's tables are missing: run posync.migrations.upgrade(engine) (or "
                                 "`posync db upgrade`) before Posync(...)")
    raise ConfigurationError(f"posync's tables are at revision {stamped}, this posync needs {HEAD}: run "
                             "posync.migrations.upgrade(engine) (or `posync db upgrade`)")
