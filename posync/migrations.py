"""Run posync's Alembic migrations against an engine (the host's, usually).

    from posync.migrations import upgrade
    upgrade(engine)            # idempotent; safe at every start-up

The scripts live in the repository's ``migrations/`` and ship as ``posync._migrations``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

__all__ = ["alembic_config", "current", "upgrade"]


def alembic_config() -> Config:
    scripts = importlib.import_module("posync._migrations")  # the top-level migrations/, as packaged
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(str(scripts.__file__)).parent))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": "posync_alembic_version"}).get_current_revision()
