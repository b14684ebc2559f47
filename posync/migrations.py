"""Run posync's Alembic migrations against an engine (the host's, usually).

    from posync.migrations import upgrade
    upgrade(engine)            # idempotent; safe at every start-up

The scripts live in the repository's ``migrations/`` and ship as ``posync._migrations``. Alembic is
imported only when there is something to do: a database already at :data:`HEAD` is recognised by one
read of the version table, so ``import posync`` and every start-up skip Alembic's import and set-up.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["HEAD", "VERSION_TABLE", "alembic_config", "current", "downgrade", "upgrade"]

HEAD = "0004"  # the newest script's revision (a test holds it equal to Alembic's own head)
VERSION_TABLE = "posync_alembic_version"


def alembic_config() -> Config:
    from alembic.config import Config

    scripts = importlib.import_module("posync._migrations")  # the top-level migrations/, as packaged
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(str(scripts.__file__)).parent))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    if revision in ("head", HEAD) and _stamped(engine) == HEAD:
        return
    from alembic import command

    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def _stamped(engine: Engine) -> str | None:
    """The one revision the version table holds, or None (no table yet, or anything unusual: Alembic decides)."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
            conn.rollback()
    except DBAPIError:
        return None
    return rows[0][0] if len(rows) == 1 else None
